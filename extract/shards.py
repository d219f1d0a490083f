"""Sharded extraction: `--shard i/n` runs one slice of a dataset, so n GPUs (torchrun, a SLURM
array) share a pass; the last shard to finish joins them into the store an unsharded run writes.

Shard i takes positions i, i+n, i+2n, … (round robin, so every shard spans classes and splits).
Shard stores live under `<cache_root>/shards/`, where probes never look; the joined store has the
unsharded key, the unsharded row order and the same bytes, so nothing downstream can tell.
"""

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from medprobe.cache import (
    RowTable,
    StoreSpec,
    StoreWriter,
    ToolkitError,
    find_complete_store,
    store_path,
)
from medprobe.cache.catalog import remove_store
from medprobe.cache.reader import open_store

logger = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    index_text, sep, count_text = text.partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        index, count = -1, 0
    if not sep or not 0 <= index < count:
        raise ToolkitError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    return index, count


def shard_root(cache_root: Path) -> Path:
    return Path(cache_root) / "shards"


def shard_spec(full_spec: StoreSpec, index: int, count: int) -> StoreSpec:
    """The spec of shard `index` of `count`: the full spec, marked with its slice."""
    return replace(full_spec, dataset={**full_spec.dataset, "shard": f"{index}/{count}"})


def shard_positions(positions: np.ndarray, index: int, count: int) -> np.ndarray:
    return positions[index::count]


def join_shards(
    full_spec: StoreSpec, full_rows: RowTable, count: int, cache_root: Path, info: dict
) -> Path | None:
    """Write the unsharded store from its `count` shard stores once all are complete, then
    remove them. Returns the joined store, or None while a shard is missing or running."""
    paths = [
        find_complete_store(shard_root(cache_root), shard_spec(full_spec, i, count))
        for i in range(count)
    ]
    if not all(paths):
        missing = [i for i, p in enumerate(paths) if p is None]
        logger.info("shards %s of %s not complete yet; join waits", missing, count)
        return None
    embeddings: dict[str, dict[str, np.ndarray]] = {}
    skipped: dict[str, str] = {}
    for path in paths:
        store = open_store(path)
        skipped.update(store.skipped())
        for split in store.splits:
            arrays = {p: store.embeddings(split, p, dtype=None) for p in full_spec.poolings}
            for row, image_id in enumerate(store.ids(split)):
                embeddings[image_id] = {p: values[row] for p, values in arrays.items()}
    target = store_path(cache_root, full_spec)
    try:
        with StoreWriter(target, full_spec, full_rows, info=info) as writer:
            for position, image_id in enumerate(full_rows.ids):
                ok = image_id in embeddings
                values = {
                    p: (embeddings[image_id][p][None] if ok else np.zeros((0, 0)))
                    for p in full_spec.poolings
                }
                writer.append(
                    position,
                    np.array([ok]),
                    values,
                    {} if ok else {position: skipped.get(image_id, "missing in shards")},
                )
            joined = writer.finish()
    except ToolkitError as error:
        if "being written by another process" in str(error):
            logger.info("another process is joining %s", target)
            return None
        raise
    for path in paths:
        remove_store(path)
    return joined
