"""The extraction loop: one pass over a dataset feeds every requested model, each into its store.

Each image is decoded once (in loader workers) and cut to every input geometry the models need;
each model normalises its geometry on the device and writes all its poolings from one forward
pass. Stores already complete are skipped before anything is built; partial ones resume.
"""

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medprobe.cache import (
    RowTable,
    StoreSpec,
    StoreWriter,
    ToolkitError,
    find_complete_store,
    store_path,
)
from medprobe.cache.key import file_sha256
from medprobe.extract.datasets.base import ImageDataset
from medprobe.extract.forward import Embedder, MicroBatcher, StoreFeed, pixels_embedder
from medprobe.extract.gpu_decode import (
    DeviceJpegDecoder,
    EncodedImages,
    check_device_decoding,
    collate_encoded,
)
from medprobe.extract.loader import CachedPixels, DecodedImages, collate, make_loader
from medprobe.extract.models import Backbone, ModelSpec, Preprocessing, build_backbone
from medprobe.extract.models.sources.bundled_source import bundled_weights_path
from medprobe.extract.progress import extraction_progress
from medprobe.extract.shards import join_shards, shard_positions, shard_root, shard_spec

logger = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("fail", "skip")
DECODE_CHOICES = ("cpu", "gpu")


@dataclass(frozen=True)
class ExtractionOptions:
    """How to run, none of which changes a store's content except `dtype` and `pretrained`."""

    device: str = "auto"
    batch_size: int = 64
    num_workers: int | None = None
    on_error: str = "fail"
    limit: int | None = None
    dtype: str = "float16"
    pretrained: bool = True
    weights: Path | None = None
    compile: bool = False
    flush_rows: int = 1024
    progress: bool = True
    cache_pixels: bool = False
    shard: tuple[int, int] | None = None
    decode: str = "cpu"


@dataclass
class ExtractionReport:
    """What a run did: stores written, stores skipped as complete, images left out."""

    written: list[Path] = field(default_factory=list)
    skipped_complete: list[Path] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    images_per_second: float | None = None
    joined: list[Path] = field(default_factory=list)


@dataclass
class _Target:
    """One store to write: a model's embeddings, or (model None) a geometry's decoded pixels."""

    store_spec: StoreSpec
    path: Path
    preprocessing: Preprocessing
    model: ModelSpec | None = None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ToolkitError(f"--device {device}: CUDA is not available here; use --device cpu")
    return torch.device(device)


def default_num_workers() -> int:
    """Decoding is the CPU-bound part: use every core but one for it. The cores are those this
    process may run on (a SLURM job or a container gets fewer than the node has)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(16, (cores or 1) - 1))


def select_rows(n_rows: int, limit: int | None) -> np.ndarray:
    """All positions, or `limit` of them spread evenly so a trial still spans classes and splits."""
    if limit is None or limit >= n_rows:
        return np.arange(n_rows)
    if limit < 1:
        raise ToolkitError(f"--limit {limit}: must be at least 1")
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
    )


def weights_identity(spec: ModelSpec, options: ExtractionOptions) -> str | None:
    """Local checkpoints are keyed by content; hub checkpoints by their id and tag."""
    if options.weights is not None:
        if not Path(options.weights).is_file():
            raise ToolkitError(f"--weights {options.weights}: no such file")
        return file_sha256(str(options.weights))
    if spec.source == "bundled" and options.pretrained:
        return file_sha256(str(bundled_weights_path()))
    return None


def plan_store(
    dataset: ImageDataset, rows: RowTable, spec: ModelSpec, options: ExtractionOptions
) -> StoreSpec:
    """The StoreSpec (and so the key) of `spec` over `rows`, computed without building the model."""
    return StoreSpec(
        dataset={
            "name": dataset.name,
            "fingerprint": rows.fingerprint(),
            "options": dict(dataset.options),
        },
        model=spec.identity(
            pretrained=options.pretrained, weights_sha256=weights_identity(spec, options)
        ),
        preprocessing=spec.preprocessing.as_dict(),
        poolings=spec.poolings,
        dtype=options.dtype,
        task=dataset.task.as_dict(),
    )


def pixel_store_spec(dataset: ImageDataset, rows: RowTable, geometry: Preprocessing) -> StoreSpec:
    """The preprocessed-image cache of one input geometry: uint8 (C*H*W) per row, no model."""
    size, resize, interpolation, crop, channels = geometry.view_key
    return StoreSpec(
        dataset={
            "name": dataset.name,
            "fingerprint": rows.fingerprint(),
            "options": dict(dataset.options),
        },
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
        poolings=("pixels",),
        dtype="uint8",
        task=dataset.task.as_dict(),
    )


def pixel_cache_root(cache_root: Path) -> Path:
    """Pixel caches live apart (`<root>/pixels/<dataset>/`), so probes never see them."""
    return Path(cache_root) / "pixels"


def extract_dataset(
    dataset: ImageDataset,
    specs: Sequence[ModelSpec],
    *,
    cache_root: Path,
    options: ExtractionOptions,
) -> ExtractionReport:
    """Write one store per model in `specs` for `dataset`, in a single pass over the images.

    Images come from a complete pixel cache when one exists for every geometry needed, else they
    are decoded (and, with `cache_pixels`, cached for the next model).
    """
    if options.on_error not in ON_ERROR_CHOICES:
        raise ToolkitError(f"--on-error {options.on_error!r}: choose one of {ON_ERROR_CHOICES}")
    if options.decode not in DECODE_CHOICES:
        raise ToolkitError(f"--decode {options.decode!r}: choose one of {DECODE_CHOICES}")
    if options.decode == "gpu":
        check_device_decoding([s.preprocessing for s in specs], resolve_device(options.device))
    if options.weights is not None and len(specs) != 1:
        raise ToolkitError("--weights names one checkpoint; pass exactly one --model with it")
    positions = select_rows(len(dataset.rows), options.limit)
    full_rows = subset_rows(dataset.rows, positions)
    if options.shard is not None:
        positions = shard_positions(positions, *options.shard)
    rows = subset_rows(dataset.rows, positions)
    data_root = str(dataset.root.resolve()) if dataset.image_path(0) is not None else None
    info = {**dataset.info, "data_root": data_root, "limit": options.limit}
    report = ExtractionReport()
    targets: list[_Target] = []
    to_join: list[StoreSpec] = []
    for spec in specs:
        store_spec = plan_store(dataset, full_rows, spec, options)
        done = find_complete_store(cache_root, store_spec)
        if done is None and options.shard is not None:
            to_join.append(store_spec)
            store_spec = shard_spec(store_spec, *options.shard)
            done = find_complete_store(shard_root(cache_root), store_spec)
        if done is not None:
            logger.info("%s x %s: complete store %s, skipped", dataset.name, spec.name, done)
            report.skipped_complete.append(done)
            continue
        root = cache_root if options.shard is None else shard_root(cache_root)
        targets.append(_Target(store_spec, store_path(root, store_spec), spec.preprocessing, spec))
    if targets:
        _write_targets(dataset, rows, positions, targets, cache_root, options, info, report)
    for full_spec in to_join:
        joined = join_shards(full_spec, full_rows, options.shard[1], cache_root, info)
        if joined is not None:
            report.joined.append(joined)
    return report


def _write_targets(
    dataset: ImageDataset,
    rows: RowTable,
    positions: np.ndarray,
    targets: list[_Target],
    cache_root: Path,
    options: ExtractionOptions,
    info: dict,
    report: ExtractionReport,
) -> None:
    """One pass over `positions` that writes every target store (and pixel caches if asked)."""
    geometries = list({t.preprocessing.view_key: t.preprocessing for t in targets}.values())
    pixel_root = pixel_cache_root(cache_root)
    pixel_specs = [pixel_store_spec(dataset, rows, g) for g in geometries]
    cached = [find_complete_store(pixel_root, p) for p in pixel_specs]
    if all(cached):
        images = CachedPixels(cached, rows.ids, geometries)
        logger.info("reading decoded pixels from %s", [str(c) for c in cached])
    else:
        images_type = EncodedImages if options.decode == "gpu" else DecodedImages
        images = images_type(dataset, positions, geometries)
        if options.cache_pixels:
            targets += [
                _Target(p, store_path(pixel_root, p), g)
                for p, g, c in zip(pixel_specs, geometries, cached, strict=True)
                if not c
            ]
    writers = [
        StoreWriter(t.path, t.store_spec, rows, info=info, flush_rows=options.flush_rows)
        for t in targets
    ]
    with contextlib.ExitStack() as stack:
        for writer in writers:
            stack.enter_context(writer)
        _run_pass(dataset, images, targets, writers, geometries, options, report)
        report.written += [w.finish() for w in writers if w.spec.dtype != "uint8"]
        for writer in writers:
            if writer.spec.dtype == "uint8":
                logger.info("pixel cache written: %s", writer.finish())


def _run_pass(
    dataset: ImageDataset,
    images: DecodedImages | EncodedImages | CachedPixels,
    targets: list[_Target],
    writers: list[StoreWriter],
    geometries: list[Preprocessing],
    options: ExtractionOptions,
    report: ExtractionReport,
) -> None:
    start = min(w.next_row for w in writers)
    if start == len(images):
        return
    device = resolve_device(options.device)
    decoder = None
    if isinstance(images, EncodedImages):
        decoder = DeviceJpegDecoder(images, device)
    view_keys = [g.view_key for g in geometries]
    feeds = []
    for target, writer in zip(targets, writers, strict=True):
        embed: Embedder = pixels_embedder
        if target.model is not None:
            backbone = build_backbone(
                target.model, weights=options.weights, pretrained=options.pretrained
            )
            embed = MicroBatcher(_prepare(backbone, device, options), device, target.model)
        feeds.append(StoreFeed(writer, embed, view_keys.index(target.preprocessing.view_key)))
    num_workers = default_num_workers() if options.num_workers is None else options.num_workers
    loader = make_loader(
        images,
        collate_fn=collate if decoder is None else collate_encoded,
        start=start,
        batch_size=options.batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    started = time.perf_counter()
    n_images = 0
    description = f"{dataset.name} x {', '.join(t.store_spec.model['name'] for t in targets)}"
    with extraction_progress(
        description, total=len(images), completed=start, enabled=options.progress
    ) as advance:
        try:
            for loaded in loader:
                batch = loaded if decoder is None else decoder(loaded)
                if batch.failures and options.on_error == "fail":
                    position, reason = next(iter(batch.failures.items()))
                    raise ToolkitError(
                        f"{reason} (row {position}). Fix or remove the file, or rerun with "
                        "--on-error skip to leave unreadable images out (they are recorded)."
                    )
                for failed_position, reason in batch.failures.items():
                    report.failures[writers[0].rows.ids[failed_position]] = reason
                    logger.warning("skipped %s", reason)
                for feed in feeds:
                    feed.launch(batch)
                n_images += len(batch.ok)
                advance(len(batch.ok))
        except (ToolkitError, KeyboardInterrupt):
            # A bad image or Ctrl-C: the batch computed last is sound, keep it for the resume.
            # (Other errors may come from the device itself, whose pending copies can't be trusted.)
            for feed in feeds:
                feed.flush()
            raise
        for feed in feeds:
            feed.flush()
    elapsed = time.perf_counter() - started
    report.images_per_second = n_images / elapsed if elapsed > 0 else None


def _prepare(backbone: Backbone, device: torch.device, options: ExtractionOptions) -> Backbone:
    # channels_last pays on CUDA and on CPU alike (1.5x for EfficientNet-Lite0 on 2 CPU cores).
    backbone = backbone.to(device, memory_format=torch.channels_last)
    if options.compile:
        backbone.encoder = torch.compile(backbone.encoder)
    return backbone
