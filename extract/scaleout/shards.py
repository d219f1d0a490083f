"""Sharded extraction: `--shard i/n` runs one slice of a dataset, so n GPUs (torchrun, a SLURM
array, `extract submit`) share a pass; the last shard to finish joins them into the store an
unsharded run writes.

Shard i takes positions i, i+n, i+2n, … (round robin, so every shard spans classes and splits).
Shard stores live under `<cache_root>/shards/`, where probes never look; the joined store has the
unsharded key, the unsharded row order and the same layout, so nothing downstream can tell. The
join streams: it reads the shard stores a chunk of rows at a time and appends them in unsharded
order to an ordinary `StoreWriter`, so its memory is a few chunks, not the dataset, and a join
that is killed resumes from its own journal.
"""

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from medprobe.cache import (
    RowTable,
    Store,
    StoreSpec,
    StoreWriter,
    ToolkitError,
    find_complete_store,
    store_path,
)
from medprobe.cache.inventory.catalog import remove_store
from medprobe.cache.layout.schema import SPLITS
from medprobe.cache.opening import open_store

logger = logging.getLogger(__name__)

AUTO = "auto"
# Rows per step of the join: 4096 rows x 3 poolings x 1024-d float16 is 24 MiB.
JOIN_CHUNK_ROWS = 4096
# With tokens, fewer: a step's tokens are gathered as float32 (ViT-L at 8 x 8: 260 KiB a row).
JOIN_TOKEN_BYTES = 64 << 20
# The lock's refusal when another process holds the store: that process is joining it.
LOCK_HELD = "being written by another process"


@dataclass(frozen=True)
class ShardAssignment:
    """The slice this process runs, and where it was read from (the CLI prints `source`).

    shard: (index, count), or None for the whole dataset; local_rank: torchrun's LOCAL_RANK,
    the GPU of this node that the process should use, or None outside torchrun.
    """

    shard: tuple[int, int] | None
    source: str
    local_rank: int | None = None


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    index_text, sep, count_text = text.partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        index, count = -1, 0
    if not sep or not 0 <= index < count:
        raise ToolkitError(
            f"shard={text!r}: expected i/n with 0 <= i < n, e.g. 0/4, or 'auto'", argument="shard"
        )
    return index, count


def resolve_shard(text: str | None, environ: Mapping[str, str] | None = None) -> ShardAssignment:
    """`--shard` as given: None (whole dataset), 'i/n', or 'auto' read from the launcher.

    'auto' looks, in order, at torchrun (RANK, WORLD_SIZE, LOCAL_RANK), a SLURM array
    (SLURM_ARRAY_TASK_ID counted from SLURM_ARRAY_TASK_MIN in steps of SLURM_ARRAY_TASK_STEP,
    out of SLURM_ARRAY_TASK_COUNT), SLURM tasks (SLURM_PROCID of SLURM_NTASKS); with none of them
    the process runs the whole dataset. A world of one is the whole dataset too.
    """
    if text is None:
        return ShardAssignment(None, "no --shard: the whole dataset")
    if text != AUTO:
        return ShardAssignment(parse_shard(text), f"--shard {text}")
    env = os.environ if environ is None else environ
    if "RANK" in env or "WORLD_SIZE" in env:
        rank, world = _required_ints(env, "RANK", "WORLD_SIZE")
        local_rank = _required_ints(env, "LOCAL_RANK")[0] if "LOCAL_RANK" in env else None
        return _assignment(rank, world, f"torchrun: RANK={rank} WORLD_SIZE={world}", local_rank)
    if "SLURM_ARRAY_TASK_ID" in env:
        task_id, n_tasks = _required_ints(env, "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")
        first = _optional_int(env, "SLURM_ARRAY_TASK_MIN", 0)
        step = _optional_int(env, "SLURM_ARRAY_TASK_STEP", 1)
        index, off_step = divmod(task_id - first, max(step, 1))
        if off_step or not 0 <= index < n_tasks:
            raise ToolkitError(
                f"shard='auto': SLURM_ARRAY_TASK_ID={task_id} (array from {first} in steps of "
                f"{step}) is not one of {n_tasks} evenly spaced tasks; submit the array as "
                f"--array=0-{n_tasks - 1} so task i runs shard i",
                argument="shard",
            )
        source = f"SLURM array: SLURM_ARRAY_TASK_ID={task_id} SLURM_ARRAY_TASK_COUNT={n_tasks}"
        return _assignment(index, n_tasks, source)
    if "SLURM_PROCID" in env or "SLURM_NTASKS" in env:
        proc_id, n_tasks = _required_ints(env, "SLURM_PROCID", "SLURM_NTASKS")
        return _assignment(
            proc_id, n_tasks, f"SLURM: SLURM_PROCID={proc_id} SLURM_NTASKS={n_tasks}"
        )
    return ShardAssignment(None, "--shard auto: no torchrun or SLURM variables, the whole dataset")


def _required_ints(env: Mapping[str, str], *names: str) -> list[int]:
    missing = [n for n in names if n not in env]
    if missing:
        present = ", ".join(f"{n}={env[n]}" for n in names if n in env)
        raise ToolkitError(
            f"shard='auto': {present} is set but {', '.join(missing)} is not; launch with "
            "torchrun or srun, which set both, or pass --shard i/n",
            argument="shard",
        )
    values = []
    for name in names:
        try:
            values.append(int(env[name]))
        except ValueError:
            raise ToolkitError(
                f"shard='auto': {name}={env[name]!r} is not an integer", argument="shard"
            ) from None
    return values


def _optional_int(env: Mapping[str, str], name: str, default: int) -> int:
    return _required_ints(env, name)[0] if name in env else default


def _assignment(
    index: int, count: int, source: str, local_rank: int | None = None
) -> ShardAssignment:
    if not 0 <= index < count:
        raise ToolkitError(
            f"shard='auto': {source} is not a shard (expected 0 <= index < count)",
            argument="shard",
        )
    if count == 1:
        return ShardAssignment(None, f"{source}: one process, the whole dataset", local_rank)
    return ShardAssignment((index, count), f"{source} -> shard {index}/{count}", local_rank)


def shard_device(device: str, local_rank: int | None, n_gpus: int) -> str:
    """The device of a torchrun worker: 'cuda' (or 'auto' on a node with GPUs) becomes
    'cuda:LOCAL_RANK', so the processes of a node take one GPU each. A device the user pinned
    ('cpu', 'cuda:1') is kept. n_gpus: the GPUs this process sees."""
    if local_rank is None or device not in ("auto", "cuda"):
        return device
    if device == "auto" and n_gpus == 0:
        return device
    if n_gpus and local_rank >= n_gpus:
        raise ToolkitError(
            f"device={device!r}: LOCAL_RANK={local_rank} but this node has {n_gpus} GPU(s); "
            "start at most that many processes per node (torchrun --nproc-per-node)",
            argument="device",
        )
    return f"cuda:{local_rank}"


def shard_root(cache_root: Path) -> Path:
    return Path(cache_root) / "shards"


def shard_spec(full_spec: StoreSpec, index: int, count: int) -> StoreSpec:
    """The spec of shard `index` of `count`: the full spec, marked with its slice."""
    return replace(full_spec, dataset={**full_spec.dataset, "shard": f"{index}/{count}"})


def shard_positions(positions: np.ndarray, index: int, count: int) -> np.ndarray:
    return positions[index::count]


def join_shards(
    full_spec: StoreSpec,
    full_rows: RowTable,
    count: int,
    cache_root: Path,
    info: dict,
    *,
    chunk_rows: int | None = None,
) -> Path | None:
    """Write the unsharded store from its `count` shard stores once all are complete, then
    remove them. Returns the joined store, or None while a shard is missing or running, or when
    another process is joining (or has joined) it.

    full_rows: the rows of the unsharded store, in its order (after `--limit`); shard i holds
    rows i, i+count, … of it, less the images it skipped. chunk_rows: rows per step
    (default JOIN_CHUNK_ROWS).
    """
    chunk_rows = chunk_rows or JOIN_CHUNK_ROWS
    if full_spec.token_layout is not None:
        row_bytes = 2 * full_spec.token_layout.bytes_per_image  # read back as float32
        chunk_rows = max(1, min(chunk_rows, JOIN_TOKEN_BYTES // row_bytes))
    target = store_path(cache_root, full_spec)
    if target.exists():
        logger.info("%s was joined by another process", target)
        return None
    paths = [
        find_complete_store(shard_root(cache_root), shard_spec(full_spec, i, count))
        for i in range(count)
    ]
    if not all(paths):
        missing = [i for i, p in enumerate(paths) if p is None]
        logger.info("shards %s of %s not complete yet; join waits", missing, count)
        return None
    shards = [open_store(p) for p in paths]
    try:
        with StoreWriter(target, full_spec, full_rows, info=info, flush_rows=chunk_rows) as writer:
            _append_in_unsharded_order(writer, shards, full_rows, chunk_rows)
            joined = writer.finish()
    except ToolkitError as error:
        if target.exists() or LOCK_HELD in str(error):
            logger.info("another process is joining %s", target)
            return None
        raise
    for path in paths:
        remove_store(path)
    return joined


@dataclass(frozen=True)
class _ShardTables:
    """Where each unsharded row lives: (n_rows,) arrays over the unsharded order.

    table: shard * len(SPLITS) + split index, -1 for a skipped image; table_row: the row of
    that shard's split table (its `ids` and embeddings) holding the image.
    """

    table: np.ndarray
    table_row: np.ndarray
    skip_reasons: dict[str, str]


def _shard_tables(shards: list[Store], full_rows: RowTable) -> _ShardTables:
    n_rows, count = len(full_rows), len(shards)
    skip_reasons: dict[str, str] = {}
    for shard in shards:
        skip_reasons.update(shard.skipped())
    skipped = np.fromiter((i in skip_reasons for i in full_rows.ids), bool, n_rows)
    split_index = {split: i for i, split in enumerate(SPLITS)}
    splits = np.fromiter((split_index[s] for s in full_rows.splits), np.int64, n_rows)
    table = (np.arange(n_rows) % count) * len(SPLITS) + splits
    table[skipped] = -1
    # A shard writes each split's images in unsharded order, so an image's row in its table is
    # the number of images of the same table before it: its rank within a stable sort.
    order = np.argsort(table, kind="stable")
    sorted_tables = table[order]
    table_row = np.empty(n_rows, np.int64)
    table_row[order] = np.arange(n_rows) - np.searchsorted(sorted_tables, sorted_tables)
    return _ShardTables(table, table_row, skip_reasons)


def _append_in_unsharded_order(
    writer: StoreWriter, shards: list[Store], full_rows: RowTable, chunk_rows: int
) -> None:
    """Append rows [writer.next_row, n_rows) chunk by chunk, each chunk gathered from one
    contiguous slice per shard table; a chunk's ids are checked against the unsharded rows."""
    tables = _shard_tables(shards, full_rows)
    poolings = writer.spec.poolings
    layout = writer.spec.token_layout
    for start in range(writer.next_row, len(full_rows), chunk_rows):
        stop = min(start + chunk_rows, len(full_rows))
        ok = tables.table[start:stop] >= 0
        positions = start + np.flatnonzero(ok)
        chunk_tables = tables.table[positions]
        blocks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {p: [] for p in poolings}
        token_blocks: list[tuple[np.ndarray, np.ndarray]] = []
        for table in np.unique(chunk_tables):
            in_table = chunk_tables == table
            shard, split = shards[table // len(SPLITS)], SPLITS[table % len(SPLITS)]
            rows = tables.table_row[positions[in_table]]
            window = slice(int(rows[0]), int(rows[-1]) + 1)
            expected = [full_rows.ids[p] for p in positions[in_table]]
            if shard.ids(split, rows=window).tolist() != expected:
                raise ToolkitError(
                    f"shard store {shard.path} does not hold the rows of its slice (e.g. "
                    f"{expected[0]!r} in {split}); it was written for other data. Remove it with "
                    f"`cache rm {shard.path}` and rerun that shard"
                )
            for pooling in poolings:
                values = shard.embeddings(split, pooling, dtype=None, rows=window)
                blocks[pooling].append((in_table, values))
            if layout is not None:
                token_blocks.append((in_table, shard.tokens(split, window)))
        embeddings = {}
        for pooling, parts in blocks.items():
            dim, dtype = (parts[0][1].shape[1], parts[0][1].dtype) if parts else (0, np.float32)
            gathered = np.empty((len(positions), dim), dtype)
            for in_table, values in parts:
                gathered[in_table] = values
            embeddings[pooling] = gathered
        failures = {
            int(p): tables.skip_reasons[full_rows.ids[p]] for p in start + np.flatnonzero(~ok)
        }
        tokens = None
        if layout is not None:
            tokens = np.empty((len(positions), *layout.shape), np.float32)
            for in_table, values in token_blocks:
                tokens[in_table] = values
        writer.append(start, ok, embeddings, failures, tokens=tokens)
