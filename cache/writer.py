"""Writes one store: resumable through a journal of part files, published with one atomic rename.

While a store is being computed, `<store>.journal/` (see `cache.journal`) holds its spec and one
part per flushed chunk of rows. Rows are flushed every `flush_rows` rows or `flush_seconds`
seconds, whichever comes first, so a slow model loses little to a kill (and once a part's
embeddings reach PART_BYTES). `finish()` assembles the parts into `<store>.h5` under a temporary
name and renames it: a store file that exists is complete. A full or read-only disk stops the
run with one line; what was journaled stays, and the rerun resumes from it.
"""

import logging
import shutil
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from time import monotonic
from types import TracebackType
from typing import Any

import numpy as np

from medprobe.cache.assemble import assemble_store, utc_now
from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.atomic import remove_stale_temporaries
from medprobe.cache.files.disk import os_failure
from medprobe.cache.files.paths import journal_dir, lock_path
from medprobe.cache.journal import (
    contiguous_parts,
    part_name,
    read_header,
    write_header,
    write_part,
)
from medprobe.cache.key import StoreSpec
from medprobe.cache.layout.tokens import check_token_batch
from medprobe.cache.lock import StoreLock
from medprobe.cache.rows import RowTable

logger = logging.getLogger(__name__)

# A part is also flushed once its embeddings reach this size: it is built in memory before it is
# written, so a large row (a pixel cache at 1024 px holds 3 MiB per image) must not make a part
# of flush_rows rows gigabytes large.
PART_BYTES = 256 << 20


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
        flush_seconds: float = 30.0,
    ) -> None:
        if flush_rows < 1:
            raise ToolkitError(
                f"flush_rows={flush_rows}: must be at least 1", argument="flush_rows"
            )
        if not flush_seconds > 0:
            raise ToolkitError(
                f"flush_seconds={flush_seconds}: must be positive", argument="flush_seconds"
            )
        self.path = Path(path)
        self.spec = spec
        self.rows = rows
        self.info = dict(info or {})
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.journal = journal_dir(self.path)
        self._lock = StoreLock(lock_path(self.path))
        self._next_row = 0
        self._journaled_row = 0  # rows before it are in parts on disk
        self._buffer_start = 0
        self._buffer_since: float | None = None  # monotonic time of the oldest buffered row
        self._buffer_ok: list[np.ndarray] = []
        self._buffer_embeddings: dict[str, list[np.ndarray]] = {p: [] for p in spec.poolings}
        self._token_layout = spec.token_layout  # None: a store without tokens
        self._buffer_tokens: list[np.ndarray] = []
        self._buffer_failures: dict[int, str] = {}
        self._row_bytes = 0  # embedding bytes per row, once the first row is seen
        self._created_at = utc_now()
        self._part_writer: ThreadPoolExecutor | None = None
        self._part_in_flight: tuple[Future[int], Path, int] | None = None
        self._failure: ToolkitError | None = None  # a part that failed: no later part may land

    @property
    def next_row(self) -> int:
        """The first row not yet appended (rows before it are journaled or buffered)."""
        return self._next_row

    def __enter__(self) -> "StoreWriter":
        try:
            self._lock.acquire()
        except OSError as error:
            raise os_failure(error, self._lock.lock_path, doing="taking the writer lock") from error
        try:
            self._open_journal()
        except OSError as error:
            self._lock.release()
            raise os_failure(error, self.journal, doing="opening the journal") from error
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
            if self._failure is None:
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
        # A killed assembly leaves `.<store>.h5.tmp-<pid>` as large as the store; nothing else
        # would ever remove it. A live writer's temporaries (another store) are left alone.
        remove_stale_temporaries(self.path.parent)
        self.journal.mkdir(parents=True, exist_ok=True)
        key = self.spec.key()
        recorded = read_header(self.journal)
        if recorded is not None:
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
            write_header(self.journal, header)
        # We hold the lock, so every temporary in the journal is a dead writer's.
        for stray in self.journal.glob(".*.tmp-*"):
            stray.unlink(missing_ok=True)
        parts = contiguous_parts(self.journal)
        self._next_row = self._journaled_row = parts[-1][1] if parts else 0
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
        tokens: np.ndarray | None = None,
    ) -> None:
        """Record rows [start, start + len(ok)).

        ok: (B,) bool, False for an image that was skipped (its reason in `failures`, keyed by row);
        embeddings: pooling -> (ok.sum(), D) float array for the rows where ok is True;
        tokens: (ok.sum(), T, D) float array of those rows, required exactly when the spec has
        a token layout (stored as float16).
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
        tokens = self._checked_tokens(start, ok, tokens)
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
            itemsize = np.dtype(self.spec.dtype).itemsize
            self._row_bytes = sum(v.shape[1] * itemsize for v in embeddings.values())
            for pooling, values in embeddings.items():
                self._buffer_embeddings[pooling].append(values.astype(self.spec.dtype))
            if tokens is not None:
                self._row_bytes += tokens[0].nbytes
                self._buffer_tokens.append(tokens)
        if self._buffer_since is None:
            self._buffer_since = monotonic()
        self._buffer_ok.append(ok)
        self._buffer_failures.update(failures or {})
        self._next_row = start + len(ok)
        buffered = self._next_row - self._buffer_start
        waited = monotonic() - self._buffer_since
        buffered_bytes = sum(
            c.nbytes for chunks in self._buffer_embeddings.values() for c in chunks
        ) + sum(c.nbytes for c in self._buffer_tokens)
        if (
            buffered >= self.flush_rows
            or waited >= self.flush_seconds
            or buffered_bytes >= PART_BYTES
        ):
            self.flush(wait=False)

    def _checked_tokens(
        self, start: int, ok: np.ndarray, tokens: np.ndarray | None
    ) -> np.ndarray | None:
        """`tokens` as float16 (n_ok, T, D), checked against the spec's layout and for values
        float16 cannot hold; None in a store without tokens."""
        if (tokens is None) != (self._token_layout is None):
            raise ValueError(
                f"tokens {'missing' if tokens is None else 'given'}: the store's spec "
                f"{'has' if self._token_layout else 'has no'} token layout"
            )
        if tokens is None or self._token_layout is None:
            return None
        cast = check_token_batch(self._token_layout, tokens, int(ok.sum()))
        finite = np.isfinite(cast).all(axis=(1, 2))
        if not finite.all():
            bad_rows = start + np.flatnonzero(ok)[~finite]
            names = [self.rows.ids[r] for r in bad_rows[:5]]
            raise ToolkitError(
                f"tokens of {len(bad_rows)} image(s) are NaN/Inf in float16, e.g. {names}; "
                "nothing was stored for them. Tokens are stored as float16: extract this model "
                "without --tokens"
            )
        return cast

    def flush(self, *, wait: bool = True) -> None:
        """Write the buffered rows as one journal part (atomically), then empty the buffer.

        Inside a `with` block the part is written by a background thread, so the GPU keeps
        working during the write and fsync; at most one part is in flight, so parts land in
        order. `wait=False` returns before that write is done (used by `append`). A part that
        failed (a full disk) is raised here, once, as a ToolkitError; no later part is written,
        since it would follow a gap.
        """
        if self._failure is not None:
            raise self._failure
        if self._next_row != self._buffer_start:
            start, stop = self._buffer_start, self._next_row
            ok = np.concatenate(self._buffer_ok)
            skipped = start + np.flatnonzero(~ok)
            content = {
                "rows": start + np.flatnonzero(ok),
                # A part whose images all failed holds no embeddings for that pooling.
                "embeddings": {
                    p: np.concatenate(c) for p, c in self._buffer_embeddings.items() if c
                },
                "tokens": np.concatenate(self._buffer_tokens) if self._buffer_tokens else None,
                "skipped_rows": skipped,
                "skipped_reasons": [
                    self._buffer_failures.get(int(r), "unknown error") for r in skipped
                ],
            }
            self._wait_for_part_in_flight()
            target = self.journal / part_name(start, stop)
            if self._part_writer is None:
                try:
                    write_part(target, **content)
                except OSError as error:
                    raise self._part_failed(error, target) from error
                self._journaled_row = stop
            else:
                future = self._part_writer.submit(write_part, target, **content)
                self._part_in_flight = (future, target, stop)
            self._buffer_start = stop
            self._buffer_since = None
            self._buffer_ok.clear()
            self._buffer_failures.clear()
            for chunks in self._buffer_embeddings.values():
                chunks.clear()
            self._buffer_tokens.clear()
        if wait:
            self._wait_for_part_in_flight()

    def _wait_for_part_in_flight(self) -> None:
        """Block until the background part write is on disk; raise what it raised as one line."""
        if self._part_in_flight is None:
            return
        (future, target, stop), self._part_in_flight = self._part_in_flight, None
        try:
            future.result()
        except OSError as error:
            raise self._part_failed(error, target) from error
        self._journaled_row = stop

    def _part_failed(self, error: OSError, target: Path) -> ToolkitError:
        """Record a failed part write: later parts would follow a gap, so none is written."""
        remaining = (len(self.rows) - self._journaled_row) * self._row_bytes
        self._failure = os_failure(
            error,
            target,
            doing="writing journal part",
            # the rows still to journal, then as much again to assemble the store beside them
            needed_bytes=remaining + len(self.rows) * self._row_bytes or None,
            then=f"then rerun: it resumes at row {self._journaled_row} of {len(self.rows)}",
        )
        return self._failure

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
        try:
            assemble_store(
                self.path,
                spec=self.spec,
                rows=self.rows,
                info=self.info,
                created_at=self._created_at,
                parts=[p for *_, p in parts],
            )
        except OSError as error:
            raise os_failure(
                error,
                self.path,
                doing="assembling",
                needed_bytes=len(self.rows) * self._row_bytes or None,
                then="then rerun: it resumes from the journal",
            ) from error
        shutil.rmtree(self.journal)
        logger.info("published %s", self.path)
        return self.path
