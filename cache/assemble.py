"""Assembling a finished journal into its store file: the row table per split, then each pooling
(and the tokens, in a store with tokens) streamed from the parts one part in memory at a time,
every dataset checksummed.

Free space is checked before the first byte. A store of up to `IN_MEMORY_BYTES` is built in memory
and written with plain file I/O, so even a disk that fills up meanwhile fails cleanly; a larger
one is written by HDF5 in place, where only the check guards it (see
`cache.layout.container.write_hdf5`).
"""

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.atomic import write_atomically
from medprobe.cache.files.disk import require_free_space
from medprobe.cache.journal import read_part_embeddings, read_part_table, read_part_tokens
from medprobe.cache.key import CONTENT_VERSION, StoreSpec, canonical_json
from medprobe.cache.layout.container import checksummed_dataset, string_array, write_hdf5
from medprobe.cache.layout.schema import (
    CONTAINER_FORMAT,
    CONTAINER_FORMAT_ATTR,
    EMBEDDINGS_GROUP,
    METADATA_GROUP,
    SKIPPED_GROUP,
    SPLITS,
)
from medprobe.cache.layout.tokens import token_dataset
from medprobe.cache.rows import RowTable

IN_MEMORY_BYTES = 256 << 20
# Embedding chunks of at most 4096 rows and 1 MiB: whole-split reads stay fast, and a damaged
# byte costs one chunk's checksum.
CHUNK_ROWS = 4096
CHUNK_BYTES = 1 << 20
# HDF5's own bookkeeping (object headers, chunk indexes, checksums) on top of the data.
OVERHEAD_BYTES = 256 << 10


def toolkit_version() -> str:
    try:
        return version("medprobe")
    except PackageNotFoundError:
        return "unknown"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def assembled_bytes(rows: RowTable, parts: list[Path]) -> int:
    """An upper bound on the store's size: the parts (which hold every embedding, plus row
    numbers the store does not keep) and the row table, plus HDF5's overhead."""
    longest_id = max((len(i.encode()) for i in rows.ids), default=1)
    longest_group = max((len(g.encode()) for g in rows.groups or []), default=0)
    longest_group += sum(
        max((len(v.encode()) for v in values), default=0)
        for values in (rows.metadata or {}).values()
    )
    label_bytes = rows.labels.itemsize * int(np.prod(rows.labels.shape[1:], dtype=np.int64))
    mask_bytes = 0 if rows.label_mask is None else rows.label_mask[0:1].size
    per_row = longest_id + longest_group + label_bytes + mask_bytes
    data = sum(p.stat().st_size for p in parts) + len(rows) * per_row
    return int(data * 1.02) + OVERHEAD_BYTES


def assemble_store(
    target: Path,
    *,
    spec: StoreSpec,
    rows: RowTable,
    info: Mapping[str, Any],
    created_at: str,
    parts: list[Path],
) -> None:
    """Publish the store at `target` from the journal `parts` (complete, in row order)."""
    tables = [read_part_table(p) for p in parts]
    written = np.concatenate([t[0] for t in tables])
    if len(written) == 0:
        raise ToolkitError(f"every image failed; nothing to store in {target}")
    needed = assembled_bytes(rows, parts)
    require_free_space(
        target.parent, needed, what=f"assembling {target}", then="then rerun: it resumes"
    )
    skipped = np.concatenate([t[1] for t in tables])
    reasons = [r for t in tables for r in t[2]]

    def fill(store: h5py.File) -> None:
        store.attrs["format_version"] = CONTENT_VERSION
        store.attrs[CONTAINER_FORMAT_ATTR] = CONTAINER_FORMAT
        store.attrs["key"] = spec.key()
        store.attrs["spec"] = canonical_json(spec.as_dict())
        store.attrs["info"] = canonical_json(dict(info))
        store.attrs["toolkit_version"] = toolkit_version()
        store.attrs["created_at"] = created_at
        store.attrs["complete"] = False
        split_of_written = np.asarray(rows.splits)[written]
        for split in SPLITS:
            split_rows = written[split_of_written == split]
            if len(split_rows):
                _write_split_table(store.create_group(split), rows, split_rows)
        for pooling in spec.poolings:
            _copy_pooling(store, pooling, parts, split_of_written)
        if spec.token_layout is not None:
            layout = spec.token_layout
            _stream_by_split(
                parts,
                read_part_tokens,
                split_of_written,
                lambda split, n_rows, _: token_dataset(store, split, n_rows, layout),
            )
        if reasons:
            group = store.create_group(SKIPPED_GROUP)
            checksummed_dataset(group, "ids", string_array([rows.ids[r] for r in skipped]))
            checksummed_dataset(group, "reasons", string_array(reasons))
        store.attrs["finished_at"] = utc_now()
        store.attrs["complete"] = True

    if needed <= IN_MEMORY_BYTES:
        write_hdf5(target, fill)
    else:
        write_atomically(target, lambda tmp: _fill_file(tmp, fill))


def _fill_file(path: Path, fill: Any) -> None:
    with h5py.File(path, "w") as store:
        fill(store)


def _copy_pooling(
    store: h5py.File, pooling: str, parts: list[Path], split_of_written: np.ndarray
) -> None:
    """Stream one pooling from the parts into per-split datasets, one part in memory at a
    time, so assembling a large store (or a pixel cache) needs little memory."""

    def create(split: str, n_rows: int, values: np.ndarray) -> h5py.Dataset:
        row_bytes = values.shape[1] * values.dtype.itemsize
        chunk_rows = max(1, min(n_rows, CHUNK_ROWS, CHUNK_BYTES // row_bytes))
        return checksummed_dataset(
            store,
            f"{split}/{EMBEDDINGS_GROUP}/{pooling}",
            shape=(n_rows, values.shape[1]),
            dtype=values.dtype,
            chunks=(chunk_rows, values.shape[1]),
        )

    _stream_by_split(
        parts, lambda path: read_part_embeddings(path, pooling), split_of_written, create
    )


def _stream_by_split(
    parts: list[Path],
    read_part: Callable[[Path], np.ndarray | None],
    split_of_written: np.ndarray,
    create: Callable[[str, int, np.ndarray], h5py.Dataset],
) -> None:
    """Copy the rows of each journal part (`read_part`: None where every image of the part
    failed) into one dataset per split, made by `create(split, n_rows, first_values)` when
    that split's first rows arrive; one part in memory at a time."""
    datasets: dict[str, h5py.Dataset] = {}
    offsets = dict.fromkeys(SPLITS, 0)
    cursor = 0
    for part_path in parts:
        values = read_part(part_path)
        if values is None:
            continue
        part_splits = split_of_written[cursor : cursor + len(values)]
        cursor += len(values)
        for split in SPLITS:
            in_split = part_splits == split
            if not in_split.any():
                continue
            if split not in datasets:
                n_rows = int((split_of_written == split).sum())
                datasets[split] = create(split, n_rows, values)
            block = values[in_split]
            datasets[split][offsets[split] : offsets[split] + len(block)] = block
            offsets[split] += len(block)


def _write_split_table(group: h5py.Group, rows: RowTable, split_rows: np.ndarray) -> None:
    checksummed_dataset(group, "ids", string_array([rows.ids[r] for r in split_rows]))
    labels = rows.labels[split_rows]
    checksummed_dataset(group, "labels", labels.astype(np.int8 if labels.ndim == 2 else np.int64))
    if rows.label_mask is not None:
        checksummed_dataset(group, "label_mask", rows.label_mask[split_rows])
    if rows.groups is not None:
        checksummed_dataset(group, "groups", string_array([rows.groups[r] for r in split_rows]))
    write_metadata(group, {c: [v[r] for r in split_rows] for c, v in (rows.metadata or {}).items()})


def write_metadata(split_group: h5py.Group, columns: Mapping[str, list[str]]) -> None:
    """`<split>/metadata/<column>`: one checksummed utf-8 dataset per column ('' missing)."""
    for column, values in columns.items():
        checksummed_dataset(split_group, f"{METADATA_GROUP}/{column}", string_array(values))
