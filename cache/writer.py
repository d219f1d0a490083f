"""Writes one store: resumable through a journal of part files, published with one atomic rename.

While a store is being computed, `<store>.journal/` holds `spec.json` and one small HDF5 file per
flushed chunk of rows, each written under a temporary name, fsynced and renamed into place; a part
therefore exists whole or not at all. A rerun (after Ctrl-C, SIGKILL or a power cut) keeps the
longest run of parts from row 0 and continues after it. `finish()` copies the parts into
`<store>.h5` under a temporary name and renames it: a store file that exists is complete.
"""

import json
import logging
import shutil
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from medprobe.cache.atomic import write_atomically
from medprobe.cache.errors import ToolkitError
from medprobe.cache.key import STORE_FORMAT_VERSION, StoreSpec, canonical_json
from medprobe.cache.lock import StoreLock
from medprobe.cache.paths import journal_dir, lock_path
from medprobe.cache.rows import RowTable
from medprobe.cache.schema import (
    EMBEDDINGS_GROUP,
    SKIPPED_GROUP,
    SPLITS,
)

logger = logging.getLogger(__name__)

STRING_DTYPE = h5py.string_dtype(encoding="utf-8")


def toolkit_version() -> str:
    try:
        return version("medprobe")
    except PackageNotFoundError:
        return "unknown"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def part_name(start: int, stop: int) -> str:
    return f"part-{start:010d}-{stop:010d}.h5"


def parse_part_name(name: str) -> tuple[int, int] | None:
    stem = name.removesuffix(".h5")
    pieces = stem.split("-")
    if len(pieces) != 3 or pieces[0] != "part" or not name.endswith(".h5"):
        return None
    try:
        return int(pieces[1]), int(pieces[2])
    except ValueError:
        return None


def contiguous_parts(journal: Path) -> list[tuple[int, int, Path]]:
    """Parts from row 0 with no gap, in order; anything after a gap cannot be trusted."""
    parts = sorted(
        (bounds[0], bounds[1], entry)
        for entry in journal.iterdir()
        if (bounds := parse_part_name(entry.name)) is not None
    )
    kept: list[tuple[int, int, Path]] = []
    cursor = 0
    for start, stop, entry in parts:
        if start != cursor:
            logger.warning(
                "ignoring journal part %s: expected one starting at row %d", entry, cursor
            )
            continue
        kept.append((start, stop, entry))
        cursor = stop
    return kept


class StoreWriter:
    """Appends embeddings row by row for a fixed `RowTable` and publishes the finished store.

    Use as a context manager: entering takes the writer lock and reads the journal, so
    `next_row` says where to continue; `append` is called with consecutive rows; `finish` publishes.
    """

    def __init__(
        self,
        path: Path,
        spec: StoreSpec,
        rows: RowTable,
        *,
        info: Mapping[str, Any] | None = None,
        flush_rows: int = 1024,
    ) -> None:
        self.path = Path(path)
        self.spec = spec
        self.rows = rows
        self.info = dict(info or {})
        self.flush_rows = flush_rows
        self.journal = journal_dir(self.path)
        self._lock = StoreLock(lock_path(self.path))
        self._next_row = 0
        self._buffer_start = 0
        self._buffer_ok: list[np.ndarray] = []
        self._buffer_embeddings: dict[str, list[np.ndarray]] = {p: [] for p in spec.poolings}
        self._buffer_failures: dict[int, str] = {}
        self._created_at = utc_now()
        self._part_writer: ThreadPoolExecutor | None = None
        self._part_in_flight: Future[None] | None = None

    @property
    def next_row(self) -> int:
        """The first row not yet appended (rows before it are journaled or buffered)."""
        return self._next_row

    def __enter__(self) -> "StoreWriter":
        self._lock.acquire()
        try:
            self._open_journal()
        except BaseException:
            self._lock.release()
            raise
        self._part_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-part")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            # Whatever stopped the run, the rows already appended are valid: keep them.
            self.flush()
        finally:
            if self._part_writer is not None:
                self._part_writer.shutdown(wait=True)
                self._part_writer = None
            self._lock.release()

    def _open_journal(self) -> None:
        if self.path.exists():
            raise ToolkitError(
                f"store {self.path} already exists; it is complete, nothing to write"
            )
        self.journal.mkdir(parents=True, exist_ok=True)
        spec_file = self.journal / "spec.json"
        key = self.spec.key()
        if spec_file.exists():
            recorded = json.loads(spec_file.read_text())
            if recorded.get("key") != key:
                raise ToolkitError(
                    f"journal {self.journal} belongs to key {recorded.get('key')!r}, not {key!r}; "
                    f"remove it with `cache rm {self.path}` and rerun"
                )
            self._created_at = recorded.get("created_at", self._created_at)
        else:
            header = {
                "key": key,
                "created_at": self._created_at,
                "spec": self.spec.as_dict(),
                "n_rows": len(self.rows),
            }

            def write_spec(tmp: Path) -> None:
                tmp.write_text(json.dumps(header, indent=1, sort_keys=True))

            write_atomically(spec_file, write_spec)
        for stray in self.journal.glob(".*.tmp-*"):
            stray.unlink(missing_ok=True)
        parts = contiguous_parts(self.journal)
        self._next_row = parts[-1][1] if parts else 0
        self._buffer_start = self._next_row
        if self._next_row:
            logger.info(
                "resuming %s at row %d of %d", self.path.name, self._next_row, len(self.rows)
            )

    def append(
        self,
        start: int,
        ok: np.ndarray,
        embeddings: Mapping[str, np.ndarray],
        failures: Mapping[int, str] | None = None,
    ) -> None:
        """Record rows [start, start + len(ok)).

        ok: (B,) bool, False for an image that was skipped (its reason in `failures`, keyed by row);
        embeddings: pooling -> (ok.sum(), D) float array for the rows where ok is True.
        """
        ok = np.asarray(ok, dtype=bool)
        if start != self._next_row:
            raise ValueError(
                f"append at row {start}, but the next row to write is {self._next_row}"
            )
        if set(embeddings) != set(self.spec.poolings):
            raise ValueError(
                f"poolings {sorted(embeddings)} != store poolings {self.spec.poolings}"
            )
        n_ok = int(ok.sum())
        for pooling, values in embeddings.items():
            if values.ndim != 2 or values.shape[0] != n_ok:
                raise ValueError(f"{pooling}: expected ({n_ok}, D) rows, got {values.shape}")
            with np.errstate(over="ignore"):  # overflow is caught just below, by name
                cast = values.astype(self.spec.dtype)
            finite = np.isfinite(cast).all(axis=1)
            if not finite.all():
                bad_rows = start + np.flatnonzero(ok)[~finite]
                names = [self.rows.ids[r] for r in bad_rows[:5]]
                raise ToolkitError(
                    f"{pooling} embeddings of {len(bad_rows)} image(s) are NaN/Inf in "
                    f"{self.spec.dtype}, e.g. {names}; nothing was stored for them. "
                    "If the model's outputs exceed float16's range, use --dtype float32."
                )
        # Validated every pooling before touching the buffer, so a refusal leaves it consistent.
        if n_ok:
            for pooling, values in embeddings.items():
                self._buffer_embeddings[pooling].append(values.astype(self.spec.dtype))
        self._buffer_ok.append(ok)
        self._buffer_failures.update(failures or {})
        self._next_row = start + len(ok)
        if self._next_row - self._buffer_start >= self.flush_rows:
            self.flush(wait=False)

    def flush(self, *, wait: bool = True) -> None:
        """Write the buffered rows as one journal part (atomically), then empty the buffer.

        Inside a `with` block the part is written by a background thread, so the GPU keeps
        working during the HDF5 write and fsync; at most one part is in flight, so parts land
        in order. `wait=False` returns before that write is done (used by `append`).
        """
        if self._next_row != self._buffer_start:
            start, stop = self._buffer_start, self._next_row
            ok = np.concatenate(self._buffer_ok)
            rows = start + np.flatnonzero(ok)
            skipped = start + np.flatnonzero(~ok)
            reasons = [self._buffer_failures.get(int(r), "unknown error") for r in skipped]
            # A part whose images all failed holds no embeddings for that pooling.
            embeddings = {p: np.concatenate(c) for p, c in self._buffer_embeddings.items() if c}

            def write_part(tmp: Path) -> None:
                with h5py.File(tmp, "w") as part:
                    part.create_dataset("rows", data=rows.astype(np.int64))
                    for pooling, values in embeddings.items():
                        part.create_dataset(f"{EMBEDDINGS_GROUP}/{pooling}", data=values)
                    part.create_dataset("skipped_rows", data=skipped.astype(np.int64))
                    part.create_dataset("skipped_reasons", data=reasons, dtype=STRING_DTYPE)

            self._wait_for_part_in_flight()
            target = self.journal / part_name(start, stop)
            if self._part_writer is None:
                write_atomically(target, write_part)
            else:
                self._part_in_flight = self._part_writer.submit(
                    write_atomically, target, write_part
                )
            self._buffer_start = stop
            self._buffer_ok.clear()
            self._buffer_failures.clear()
            for chunks in self._buffer_embeddings.values():
                chunks.clear()
        if wait:
            self._wait_for_part_in_flight()

    def _wait_for_part_in_flight(self) -> None:
        """Block until the background part write is on disk; re-raise what it raised."""
        if self._part_in_flight is not None:
            in_flight, self._part_in_flight = self._part_in_flight, None
            in_flight.result()

    def finish(self) -> Path:
        """Publish the store: all rows must be appended. Returns the store's path."""
        if self._next_row != len(self.rows):
            raise ToolkitError(
                f"cannot finish {self.path}: {self._next_row} of {len(self.rows)} rows written"
            )
        self.flush()
        parts = contiguous_parts(self.journal)
        if not parts or parts[-1][1] != len(self.rows):
            raise ToolkitError(f"journal {self.journal} does not cover all {len(self.rows)} rows")
        write_atomically(self.path, lambda tmp: self._consolidate(tmp, [p for *_, p in parts]))
        shutil.rmtree(self.journal)
        logger.info("published %s", self.path)
        return self.path

    def _consolidate(self, target: Path, parts: list[Path]) -> None:
        written_rows: list[np.ndarray] = []
        skipped_rows: list[np.ndarray] = []
        skipped_reasons: list[str] = []
        for part_path in parts:
            with h5py.File(part_path, "r") as part:
                written_rows.append(part["rows"][()])
                skipped_rows.append(part["skipped_rows"][()])
                skipped_reasons.extend(r.decode() for r in part["skipped_reasons"][()])
        rows_written = np.concatenate(written_rows)
        splits = np.asarray(self.rows.splits)
        with h5py.File(target, "w") as store:
            store.attrs["format_version"] = STORE_FORMAT_VERSION
            store.attrs["key"] = self.spec.key()
            store.attrs["spec"] = canonical_json(self.spec.as_dict())
            store.attrs["info"] = canonical_json(self.info)
            store.attrs["toolkit_version"] = toolkit_version()
            store.attrs["created_at"] = self._created_at
            store.attrs["complete"] = False
            for split in SPLITS:
                split_rows = rows_written[splits[rows_written] == split]
                if len(split_rows) == 0:
                    continue
                self._write_split_table(store.create_group(split), split_rows)
            if len(rows_written) == 0:
                raise ToolkitError(f"every image failed; nothing to store in {self.path}")
            for pooling in self.spec.poolings:
                self._copy_pooling(store, pooling, parts, splits[rows_written])
            if skipped_reasons:
                all_skipped = np.concatenate(skipped_rows)
                group = store.create_group(SKIPPED_GROUP)
                group.create_dataset(
                    "ids", data=[self.rows.ids[r] for r in all_skipped], dtype=STRING_DTYPE
                )
                group.create_dataset("reasons", data=skipped_reasons, dtype=STRING_DTYPE)
            store.attrs["finished_at"] = utc_now()
            store.attrs["complete"] = True

    def _copy_pooling(
        self, store: h5py.File, pooling: str, parts: list[Path], split_of_written: np.ndarray
    ) -> None:
        """Stream one pooling from the parts into per-split datasets, one part in memory at a
        time, so consolidating a large store (or a pixel cache) needs little memory."""
        name = f"{EMBEDDINGS_GROUP}/{pooling}"
        datasets: dict[str, h5py.Dataset] = {}
        offsets = dict.fromkeys(SPLITS, 0)
        cursor = 0
        for part_path in parts:
            with h5py.File(part_path, "r") as part:
                if name not in part:  # every image of this part failed
                    continue
                values = part[name][()]
            part_splits = split_of_written[cursor : cursor + len(values)]
            cursor += len(values)
            for split in SPLITS:
                in_split = part_splits == split
                if not in_split.any():
                    continue
                if split not in datasets:
                    n_rows = int((split_of_written == split).sum())
                    row_bytes = values.shape[1] * values.dtype.itemsize
                    chunk_rows = max(1, min(n_rows, 4096, (1 << 20) // row_bytes))
                    datasets[split] = store.create_dataset(
                        f"{split}/{name}",
                        shape=(n_rows, values.shape[1]),
                        dtype=values.dtype,
                        chunks=(chunk_rows, values.shape[1]),
                    )
                block = values[in_split]
                datasets[split][offsets[split] : offsets[split] + len(block)] = block
                offsets[split] += len(block)

    def _write_split_table(self, group: h5py.Group, split_rows: np.ndarray) -> None:
        group.create_dataset("ids", data=[self.rows.ids[r] for r in split_rows], dtype=STRING_DTYPE)
        labels = self.rows.labels[split_rows]
        group.create_dataset(
            "labels", data=labels.astype(np.int8 if labels.ndim == 2 else np.int64)
        )
        if self.rows.label_mask is not None:
            group.create_dataset("label_mask", data=self.rows.label_mask[split_rows])
        if self.rows.groups is not None:
            group.create_dataset(
                "groups", data=[self.rows.groups[r] for r in split_rows], dtype=STRING_DTYPE
            )
