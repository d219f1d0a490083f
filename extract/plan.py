"""What a run will write, computed without building a model: its rows, and each store's spec
(so its key and path)."""

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.cache import RowTable, StoreSpec
from medprobe.cache.files.disk import human_size, require_free_space
from medprobe.cache.key import file_sha256
from medprobe.extract.datasets.base import ImageDataset
from medprobe.extract.loader import PIXELS_POOLING
from medprobe.extract.models import ModelSpec, Preprocessing
from medprobe.extract.models.describe import meta_token_layout
from medprobe.extract.models.registry import RANDOM_INIT_SEED
from medprobe.extract.models.sources.bundled_source import bundled_weights_path
from medprobe.extract.options import ExtractionOptions


def select_rows(n_rows: int, limit: int | None) -> np.ndarray:
    """All positions, or `limit` of them spread evenly so a trial still spans classes and splits."""
    if limit is None or limit >= n_rows:
        return np.arange(n_rows)
    return np.unique(np.linspace(0, n_rows - 1, limit).round().astype(np.int64))


def subset_rows(rows: RowTable, positions: np.ndarray) -> RowTable:
    if len(positions) == len(rows):
        return rows
    return RowTable(
        ids=[rows.ids[i] for i in positions],
        splits=[rows.splits[i] for i in positions],
        labels=rows.labels[positions],
        label_mask=None if rows.label_mask is None else rows.label_mask[positions],
        groups=None if rows.groups is None else [rows.groups[i] for i in positions],
        metadata=None
        if rows.metadata is None
        else {c: [v[i] for i in positions] for c, v in rows.metadata.items()},
    )


def weights_sha256(path: Path) -> str:
    """sha256 of a checkpoint file; of a folder (a save_pretrained directory), over each file's
    relative path and content sha256, in path order."""
    if path.is_file():
        return file_sha256(str(path))
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(str(file))}\n".encode())
    return digest.hexdigest()


def weights_identity(spec: ModelSpec, options: ExtractionOptions) -> str | None:
    """Local checkpoints are keyed by content; hub checkpoints by their id and tag."""
    if options.weights is not None:
        return weights_sha256(Path(options.weights))
    if spec.source == "bundled" and options.pretrained:
        return file_sha256(str(bundled_weights_path()))
    return None


def dataset_section(dataset: ImageDataset, rows: RowTable, sources: str) -> dict[str, Any]:
    """The dataset part of a store spec: `fingerprint` keys the ids, labels and splits, and
    `sources` what the images are read from (file sizes and times, see `sources_fingerprint`)."""
    return {
        "name": dataset.name,
        "fingerprint": rows.fingerprint(),
        "sources": sources,
        "options": dict(dataset.options),
    }


def plan_store(
    dataset: ImageDataset,
    rows: RowTable,
    spec: ModelSpec,
    options: ExtractionOptions,
    *,
    sources: str,
) -> StoreSpec:
    """The StoreSpec (and so the key) of `spec` over `rows`, computed without building the model."""
    model = spec.identity(
        pretrained=options.pretrained, weights_sha256=weights_identity(spec, options)
    )
    if not options.pretrained and options.weights is None:
        model["init_seed"] = RANDOM_INIT_SEED  # the random weights are this seed's
    tokens = None
    if options.tokens is not None:  # the layout is keyed and known before the run
        tokens = {**meta_token_layout(spec, options.tokens), "max_side": options.tokens}
    return StoreSpec(
        dataset=dataset_section(dataset, rows, sources),
        model=model,
        preprocessing=spec.preprocessing.as_dict(),
        poolings=spec.poolings,
        dtype=options.dtype,
        task=dataset.task.as_dict(),
        tokens=tokens,
    )


def token_plan(stores: Sequence[tuple[ModelSpec, StoreSpec, Path]], n_images: int) -> list[str]:
    """One line per store that will hold tokens: the layout, bytes per image (tokens, and the
    embeddings, of the token size where the entry states none) and the projected store size.
    Refused (ToolkitError naming the sizes and the fix) when the free space under the cache
    cannot hold the journal and the store side by side."""
    lines, needed = [], 0
    folder = None
    for model, spec, path in stores:
        layout = spec.token_layout
        if layout is None:
            continue
        height, width = layout.grid
        itemsize = np.dtype(spec.dtype).itemsize
        sized = model if model.embed_dim else replace(model, embed_dim=layout.dim)  # timm:…
        vectors = sum((sized.pooling_dim(p) or 0) * itemsize for p in spec.poolings)
        per_image = layout.bytes_per_image + vectors
        projected = n_images * per_image
        needed += 2 * projected  # the journal's parts, then the store beside them
        folder = folder or path.parent
        lines.append(
            f"{model.name}: tokens {layout.prefix_tokens} + {height}x{width} of {layout.dim} "
            f"float16, {human_size(per_image)} per image with the embeddings; {n_images} images "
            f"-> a store of about {human_size(projected)}"
        )
    if folder is not None:
        require_free_space(
            folder,
            needed,
            what=f"the token stores ({'; '.join(lines)}; journal and store side by side)",
            then="or lower --tokens",
        )
    return lines


def pixel_store_spec(
    dataset: ImageDataset, rows: RowTable, geometry: Preprocessing, *, sources: str
) -> StoreSpec:
    """The preprocessed-image cache of one input geometry: uint8 (C*H*W) per row, no model."""
    size, resize, interpolation, crop, channels = geometry.view_key
    return StoreSpec(
        dataset=dataset_section(dataset, rows, sources),
        model={
            "name": f"pixels-{size}-{resize}-{interpolation}-{crop}-{channels}ch",
            "source": "decode",
        },
        preprocessing={
            "input_size": size,
            "resize_size": resize,
            "interpolation": interpolation,
            "crop": crop,
            "channels": channels,
        },
        poolings=(PIXELS_POOLING,),
        dtype="uint8",
        task=dataset.task.as_dict(),
    )


def pixel_cache_root(cache_root: Path) -> Path:
    """Pixel caches live apart (`<root>/pixels/<dataset>/`), so probes never see them."""
    return Path(cache_root) / "pixels"
