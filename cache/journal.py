"""The journal of a store being computed, `<store>.journal/`: `spec.json` and one small HDF5 part
per flushed chunk of rows, named by its row range (`part-<start>-<stop>.h5`).

A part is built in memory and published whole (temporary name, fsync, rename), so it exists
complete or not at all, and HDF5 itself never meets a full disk. A rerun keeps the longest run of
parts from row 0 and continues after it.
"""

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.atomic import write_atomically
from medprobe.cache.layout.container import checksummed_dataset, string_array, write_hdf5
from medprobe.cache.layout.schema import EMBEDDINGS_GROUP, TOKENS_DATASET

logger = logging.getLogger(__name__)

HEADER_FILE = "spec.json"


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


def read_header(journal: Path) -> dict[str, Any] | None:
    """The journal's `spec.json` (key, spec, created_at, n_rows), or None when there is none."""
    header_file = journal / HEADER_FILE
    if not header_file.exists():
        return None
    try:
        header = json.loads(header_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ToolkitError(f"journal header {header_file} is unreadable ({error})") from error
    if not isinstance(header, dict) or "key" not in header or "spec" not in header:
        raise ToolkitError(f"journal header {header_file} lacks 'key' or 'spec'")
    return header


def write_header(journal: Path, header: Mapping[str, Any]) -> None:
    text = json.dumps(dict(header), indent=1, sort_keys=True)
    write_atomically(journal / HEADER_FILE, lambda tmp: tmp.write_text(text))


def write_part(
    target: Path,
    *,
    rows: np.ndarray,
    embeddings: Mapping[str, np.ndarray],
    skipped_rows: np.ndarray,
    skipped_reasons: Sequence[str],
    tokens: np.ndarray | None = None,
) -> int:
    """Publish one part: `rows` (n,) int64 store rows with embeddings (pooling -> (n, D)) and,
    in a store with tokens, their `tokens` (n, T, D) float16; and the rows skipped in its range
    with their reasons. Returns the bytes written."""

    def fill(part: h5py.File) -> None:
        checksummed_dataset(part, "rows", rows.astype(np.int64))
        for pooling, values in embeddings.items():
            checksummed_dataset(part, f"{EMBEDDINGS_GROUP}/{pooling}", values)
        if tokens is not None:
            checksummed_dataset(part, TOKENS_DATASET, tokens)
        checksummed_dataset(part, "skipped_rows", skipped_rows.astype(np.int64))
        checksummed_dataset(part, "skipped_reasons", string_array(skipped_reasons))

    return write_hdf5(target, fill)


def _damaged_part(path: Path, error: Exception) -> ToolkitError:
    return ToolkitError(
        f"journal part {path} is damaged ({error}); delete it and rerun: the run resumes "
        "from the parts before it"
    )


def read_part_table(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(rows (n,) int64, skipped rows (m,) int64, their reasons) of one part."""
    try:
        with h5py.File(path, "r") as part:
            reasons = [r.decode() for r in part["skipped_reasons"][()]]
            return part["rows"][()], part["skipped_rows"][()], reasons
    except (OSError, KeyError) as error:
        raise _damaged_part(path, error) from error


def read_part_embeddings(path: Path, pooling: str) -> np.ndarray | None:
    """(n, D) embeddings of `pooling` in one part; None when every image of the part failed."""
    return _read_part_dataset(path, f"{EMBEDDINGS_GROUP}/{pooling}")


def read_part_tokens(path: Path) -> np.ndarray | None:
    """(n, T, D) float16 tokens of one part; None when every image of the part failed."""
    return _read_part_dataset(path, TOKENS_DATASET)


def _read_part_dataset(path: Path, name: str) -> np.ndarray | None:
    try:
        with h5py.File(path, "r") as part:
            return part[name][()] if name in part else None
    except OSError as error:
        raise _damaged_part(path, error) from error
