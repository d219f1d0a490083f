"""The extraction loop: one pass over a dataset feeds every requested model, each into its store.

Each image is decoded once (in loader workers) and cut to every input geometry the models need;
each model normalises its geometry on the device and writes all its poolings from one forward
pass. Stores already complete are skipped before anything is built (gaining the dataset's
metadata columns when they lack them: metadata is outside the key); partial ones resume.
"""

import contextlib
import errno
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from medprobe.cache import (
    RowTable,
    StoreSpec,
    StoreWriter,
    ToolkitError,
    find_complete_store,
    open_store,
    store_path,
)
from medprobe.cache.annotate import annotate_store
from medprobe.cache.errors import Interrupted
from medprobe.cache.files.paths import lock_path
from medprobe.cache.lock import StoreLock
from medprobe.cache.reader import display_model_name
from medprobe.extract.datasets.base import ImageDataset
from medprobe.extract.datasets.splits import split_warnings
from medprobe.extract.forward import Embedder, MicroBatcher, StoreFeed, pixels_embedder
from medprobe.extract.gpu_decode import (
    DeviceJpegDecoder,
    EncodedImages,
    check_device_decoding,
    collate_encoded,
)
from medprobe.extract.loader import CachedPixels, DecodedImages, collate, make_loader
from medprobe.extract.models import Backbone, ModelSpec, Preprocessing, build_backbone
from medprobe.extract.options import (
    ExtractionOptions,
    check_models,
    check_writable,
    default_num_workers,
    resolve_device,
)
from medprobe.extract.plan import (
    pixel_cache_root,
    pixel_store_spec,
    plan_store,
    select_rows,
    subset_rows,
    token_plan,
)
from medprobe.extract.progress import extraction_progress
from medprobe.extract.scaleout.shards import join_shards, shard_positions, shard_root, shard_spec

__all__ = ["ExtractionOptions", "ExtractionReport", "extract_dataset"]

logger = logging.getLogger(__name__)

# Write failures a user fixes by freeing space or pointing the cache elsewhere: one line, no
# traceback, and the journaled rows stay for the rerun.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


@dataclass
class ExtractionReport:
    """What a run did: the dataset and its split, stores written, stores skipped as complete,
    shards joined, images left out."""

    dataset: str = ""
    n_images: int = 0
    split: str = ""
    written: list[Path] = field(default_factory=list)
    skipped_complete: list[Path] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    images_per_second: float | None = None
    joined: list[Path] = field(default_factory=list)

    @property
    def stores(self) -> list[Path]:
        """Every complete store this run wrote, found or joined (for a shard: its shard store)."""
        return [*self.written, *self.skipped_complete, *self.joined]


@dataclass
class _Target:
    """One store to write: a model's embeddings, or (model None) a geometry's decoded pixels."""

    store_spec: StoreSpec
    path: Path
    preprocessing: Preprocessing
    model: ModelSpec | None = None


def extract_dataset(
    dataset: ImageDataset,
    specs: Sequence[ModelSpec],
    *,
    cache_root: Path,
    options: ExtractionOptions,
) -> ExtractionReport:
    """Write one store per model in `specs` for `dataset`, in a single pass over the images.

    Images come from a complete pixel cache when one exists for every geometry needed, else they
    are decoded (and, with `cache_pixels`, cached for the next model). Everything that can be
    refused (models, weights, device, cache folder) is checked before any store is opened.
    Ctrl-C raises `Interrupted`, saying how many rows each store kept.
    """
    check_models(specs, options)
    cache_root = Path(cache_root)
    device = resolve_device(options.device)
    if options.decode == "gpu":
        check_device_decoding([s.preprocessing for s in specs], device)
    positions = select_rows(len(dataset.rows), options.limit)
    full_rows = subset_rows(dataset.rows, positions)
    counts = {s: list(full_rows.splits).count(s) for s in ("train", "val", "test")}
    logger.info("%s: %d images %s to extract", dataset.name, len(full_rows), counts)
    for warning in split_warnings(full_rows.splits, full_rows.labels, dataset.task.label_names):
        logger.warning("%s: %s", dataset.name, warning)
    sources = dataset.sources_fingerprint(positions)
    if options.shard is not None:
        positions = shard_positions(positions, *options.shard)
    rows = subset_rows(dataset.rows, positions)
    data_root = str(dataset.root.resolve()) if dataset.image_path(0) is not None else None
    info = {**dataset.info, "data_root": data_root, "limit": options.limit}
    report = ExtractionReport(
        dataset=dataset.name, n_images=len(full_rows), split=str(dataset.info.get("split", ""))
    )
    targets: list[_Target] = []
    to_join: list[StoreSpec] = []
    for spec in specs:
        store_spec = plan_store(dataset, full_rows, spec, options, sources=sources)
        done = find_complete_store(cache_root, store_spec)
        if done is None and options.shard is not None:
            to_join.append(store_spec)
            store_spec = shard_spec(store_spec, *options.shard)
            done = find_complete_store(shard_root(cache_root), store_spec)
        if done is not None:
            logger.info("%s x %s: complete store %s, skipped", dataset.name, spec.name, done)
            report.skipped_complete.append(done)
            # Metadata is outside the key: a store extracted before gains the adapter's columns.
            missing = set(full_rows.metadata or {}) - set(open_store(done).metadata_columns)
            if missing and options.shard is None:
                annotate_store(done, full_rows.ids, full_rows.metadata)
                logger.info("%s: added metadata %s", done, sorted(missing))
            continue
        root = cache_root if options.shard is None else shard_root(cache_root)
        targets.append(_Target(store_spec, store_path(root, store_spec), spec.preprocessing, spec))
    if targets:
        _announce_tokens(targets, len(rows), options)
        pass_rows = _PassRows(rows, positions, sources)
        _write_targets(dataset, pass_rows, targets, cache_root, options, device, info, report)
    for full_spec in to_join:
        joined = join_shards(full_spec, full_rows, options.shard[1], cache_root, info)
        if joined is not None:
            report.joined.append(joined)
    return report


def _announce_tokens(targets: list[_Target], n_images: int, options: ExtractionOptions) -> None:
    """The plan line of each store with tokens, before anything is built; refused here when the
    cache cannot hold them."""
    planned = [(t.model, t.store_spec, t.path) for t in targets if t.model is not None]
    for line in token_plan(planned, n_images):
        logger.info("plan: %s", line)
        if options.progress:
            Console(stderr=True, soft_wrap=True, highlight=False).print(f"plan: {escape(line)}")


@dataclass(frozen=True)
class _PassRows:
    """The rows one pass writes: their table, their positions in the dataset, their sources."""

    table: RowTable
    positions: np.ndarray
    sources: str


def _write_targets(
    dataset: ImageDataset,
    rows: _PassRows,
    targets: list[_Target],
    cache_root: Path,
    options: ExtractionOptions,
    device: torch.device,
    info: dict,
    report: ExtractionReport,
) -> None:
    """One pass over `rows` that writes every target store (and pixel caches if asked).

    Models are built before any store is opened, so a model that cannot be built leaves no
    journal behind; a pixel cache another run is writing is simply not written by this one."""
    geometries = list({t.preprocessing.view_key: t.preprocessing for t in targets}.values())
    pixel_root = pixel_cache_root(cache_root)
    pixel_specs = [
        pixel_store_spec(dataset, rows.table, g, sources=rows.sources) for g in geometries
    ]
    cached = [find_complete_store(pixel_root, p) for p in pixel_specs]
    if all(cached):
        images = CachedPixels(cached, rows.table.ids, geometries)
        logger.info("reading decoded pixels from %s", [str(c) for c in cached])
    else:
        images_type = EncodedImages if options.decode == "gpu" else DecodedImages
        images = images_type(dataset, rows.positions, geometries)
        if options.cache_pixels:
            targets = targets + [
                _Target(p, store_path(pixel_root, p), g)
                for p, g, c in zip(pixel_specs, geometries, cached, strict=True)
                if not c
            ]
    check_writable(sorted({t.path.parent for t in targets}))
    targets = [t for t in targets if _writable_now(t)]
    try:
        embedders: list[Embedder] = [
            pixels_embedder if t.model is None else _embedder(t.model, device, options)
            for t in targets
        ]
    except KeyboardInterrupt:
        raise Interrupted(_rows_kept([], len(rows.table))) from None
    writers: list[StoreWriter] = []
    try:
        with contextlib.ExitStack() as stack:
            feeds = []
            view_keys = [g.view_key for g in geometries]
            for target, embed in zip(targets, embedders, strict=True):
                writer = StoreWriter(
                    target.path, target.store_spec, rows.table, info=info,
                    flush_rows=options.flush_rows,
                )  # fmt: skip
                try:
                    stack.enter_context(writer)
                except ToolkitError as error:
                    if target.model is not None:
                        raise
                    logger.warning("pixel cache not written this time: %s", error)
                    continue
                writers.append(writer)
                logger.info(
                    "%s: rows %d to %d of %d to write (a resumed store starts where it stopped)",
                    target.path,
                    writer.next_row,
                    len(rows.table),
                    len(rows.table),
                )
                feeds.append(
                    StoreFeed(writer, embed, view_keys.index(target.preprocessing.view_key))
                )
            _run_pass(dataset, images, writers, feeds, options, device, report)
            report.written += [w.finish() for w in writers if w.spec.dtype != "uint8"]
            for writer in writers:
                if writer.spec.dtype == "uint8":
                    logger.info("pixel cache written: %s", writer.finish())
    except KeyboardInterrupt:
        raise Interrupted(_rows_kept(writers, len(rows.table))) from None
    except OSError as error:
        if error.errno not in WRITE_ERRNOS:
            raise
        folder = Path(error.filename).parent if error.filename else cache_root
        raise ToolkitError(
            f"cannot write into {folder}: {error.strerror}. The rows journaled before it are "
            "kept: free space (or pass another --cache-dir) and rerun the same command to resume"
        ) from None


def _writable_now(target: _Target) -> bool:
    """Whether no other process writes `target` (its lock taken and released at once): a model
    store being written elsewhere is refused before any other store's journal is opened; a
    pixel cache being written elsewhere is left to that run."""
    try:
        StoreLock(lock_path(target.path)).acquire().release()
    except ToolkitError:
        if target.model is not None:
            raise
        logger.warning("pixel cache %s is being written by another run; not caching", target.path)
        return False
    return True


def _embedder(spec: ModelSpec, device: torch.device, options: ExtractionOptions) -> Embedder:
    logger.info("building %s (%s %s) for %s", spec.name, spec.source, spec.checkpoint, device)
    backbone = build_backbone(spec, weights=options.weights, pretrained=options.pretrained)
    backbone.token_side = options.tokens
    return MicroBatcher(_prepare(backbone, device, options), device, spec)


def _rows_kept(writers: Sequence[StoreWriter], n_rows: int) -> str:
    """The Ctrl-C message: rows each store kept (its writer flushed them on the way out)."""
    if not writers:
        return "interrupted before any store was opened; nothing was written"
    kept = {w.spec.model["name"]: w.next_row for w in writers}
    if len(set(kept.values())) == 1:
        counts = f"{next(iter(kept.values()))} of {n_rows} rows kept"
    else:
        counts = "rows kept " + ", ".join(f"{name} {n} of {n_rows}" for name, n in kept.items())
    return f"interrupted: {counts}; rerun the same command to resume"


def _run_pass(
    dataset: ImageDataset,
    images: DecodedImages | EncodedImages | CachedPixels,
    writers: list[StoreWriter],
    feeds: list[StoreFeed],
    options: ExtractionOptions,
    device: torch.device,
    report: ExtractionReport,
) -> None:
    start = min(w.next_row for w in writers)
    if start == len(images):
        return
    decoder = DeviceJpegDecoder(images, device) if isinstance(images, EncodedImages) else None
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
    names = ", ".join(display_model_name(w.spec.model) for w in writers)
    with extraction_progress(
        escape(f"{dataset.name} x {names}"),
        total=len(images),
        completed=start,
        enabled=options.progress,
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
        except (ToolkitError, KeyboardInterrupt, OSError):
            # A bad image, Ctrl-C or a failed write: the batch computed last is sound, keep it
            # where its store can still take it. (Other errors may come from the device itself,
            # whose pending copies can't be trusted.) The loader's iterator is gone by now, so
            # its workers are shut down.
            _flush_what_can_be_kept(feeds)
            raise
        for feed in feeds:
            feed.flush()
    elapsed = time.perf_counter() - started
    report.images_per_second = n_images / elapsed if elapsed > 0 else None


def _flush_what_can_be_kept(feeds: Sequence[StoreFeed]) -> None:
    """Write each feed's last launched batch; a store that cannot take it (its disk is full) is
    left as it is, so the error that stopped the run is the one reported."""
    for feed in feeds:
        try:
            feed.flush()
        except (ToolkitError, OSError) as error:
            logger.warning("%s: last batch not kept (%s)", feed.writer.path.name, error)


def _prepare(backbone: Backbone, device: torch.device, options: ExtractionOptions) -> Backbone:
    # channels_last pays on CUDA and on CPU alike (1.5x for EfficientNet-Lite0 on 2 CPU cores).
    backbone = backbone.to(device, memory_format=torch.channels_last)
    if options.compile:
        backbone.encoder = torch.compile(backbone.encoder)
    return backbone
