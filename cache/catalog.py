"""What is under a cache root: list, find, verify and remove stores (and unfinished journals)."""

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.key import StoreSpec
from medprobe.cache.lock import StoreLock
from medprobe.cache.paths import journal_dir, lock_path, store_path
from medprobe.cache.reader import Store, open_store
from medprobe.cache.schema import EMBEDDINGS_GROUP, JOURNAL_SUFFIX, STORE_SUFFIX
from medprobe.cache.writer import contiguous_parts


@dataclass(frozen=True)
class StoreEntry:
    """One line of `cache ls`: a published store, or a journal still being written."""

    path: Path
    dataset: str
    model: str
    key: str
    poolings: tuple[str, ...]
    rows: dict[str, int] = field(default_factory=dict)
    dim: int | None = None
    dtype: str = ""
    size_bytes: int = 0
    complete: bool = False
    rows_done: int | None = None
    rows_total: int | None = None
    outdated: str | None = None  # why an earlier toolkit's store is not this one's result


def _entry_for_store(path: Path) -> StoreEntry:
    store = open_store(path, require_complete=False)
    rows: dict[str, int] = {}
    dim = None
    with h5py.File(path, "r") as handle:
        for split in store.splits:
            rows[split] = int(handle[f"{split}/ids"].shape[0])
            dataset = handle[f"{split}/{EMBEDDINGS_GROUP}/{store.poolings[0]}"]
            dim = int(dataset.shape[1])
    return StoreEntry(
        path=path,
        dataset=store.dataset_name,
        model=store.model_name,
        key=store.key,
        poolings=store.poolings,
        rows=rows,
        dim=dim,
        dtype=store.spec["dtype"],
        size_bytes=path.stat().st_size,
        complete=store.complete,
        outdated=store.outdated,
    )


def _entry_for_journal(journal: Path) -> StoreEntry | None:
    spec_file = journal / "spec.json"
    if not spec_file.exists():
        return None
    header = json.loads(spec_file.read_text())
    spec = header["spec"]
    parts = contiguous_parts(journal)
    return StoreEntry(
        path=journal.with_name(journal.name.removesuffix(JOURNAL_SUFFIX)),
        dataset=spec["dataset"]["name"],
        model=spec["model"]["name"],
        key=header["key"],
        poolings=tuple(spec["poolings"]),
        dtype=spec["dtype"],
        size_bytes=sum(p.stat().st_size for p in journal.iterdir()),
        complete=False,
        rows_done=parts[-1][1] if parts else 0,
        rows_total=header.get("n_rows"),
    )


def list_stores(cache_root: Path) -> list[StoreEntry]:
    """Every store and unfinished journal under `cache_root`, sorted by dataset then model."""
    root = Path(cache_root)
    if not root.is_dir():
        return []
    entries = [_entry_for_store(p) for p in root.glob(f"*/*{STORE_SUFFIX}") if p.is_file()]
    entries += [e for j in root.glob(f"*/*{JOURNAL_SUFFIX}") if (e := _entry_for_journal(j))]
    return sorted(entries, key=lambda e: (e.dataset, e.model, e.key))


def complete_stores(cache_root: Path) -> list[Store]:
    """Every complete store under `cache_root`, opened for reading."""
    return [open_store(e.path) for e in list_stores(cache_root) if e.complete]


def find_complete_store(cache_root: Path, spec: StoreSpec) -> Path | None:
    """The published store for `spec`, or None. Cheap: one stat and one attribute read."""
    path = store_path(cache_root, spec)
    if not path.is_file():
        return None
    store = open_store(path, require_complete=False)
    if store.key != spec.key():
        raise ToolkitError(
            f"{path} holds key {store.key[:16]} but its name says {spec.key()[:16]}; the file was "
            f"renamed or copied by hand. Remove it with `cache rm {path}`."
        )
    return path if store.complete else None


def verify_store(path: Path) -> list[str]:
    """Problems found in a published store; an empty list means it is sound."""
    try:
        store = open_store(path, require_complete=False)
    except ToolkitError as error:
        return [str(error)]
    problems = []
    if not store.complete:
        problems.append("the 'complete' flag is not set")
    if store.outdated:
        problems.append(store.outdated)  # its key hashes an older format: nothing to recompute
    else:
        try:
            recomputed = StoreSpec(**{k: v for k, v in store.spec.items() if k != "format_version"})
            if recomputed.key() != store.key:
                problems.append("the 'key' attribute does not match the hash of its 'spec'")
        except (TypeError, ToolkitError) as error:
            problems.append(f"the 'spec' attribute is malformed: {error}")
    if store.key[:16] not in path.name:
        problems.append(f"file name does not carry the key prefix {store.key[:16]}")
    all_ids: list[str] = []
    with h5py.File(path, "r") as handle:
        for split in store.splits:
            n_ids = handle[f"{split}/ids"].shape[0]
            all_ids += [b.decode() for b in handle[f"{split}/ids"][()]]
            n_labels = handle[f"{split}/labels"].shape[0]
            if n_labels != n_ids:
                problems.append(f"{split}: {n_labels} labels for {n_ids} ids")
            for pooling in store.poolings:
                name = f"{split}/{EMBEDDINGS_GROUP}/{pooling}"
                if name not in handle:
                    problems.append(f"{split}: pooling {pooling!r} is missing")
                    continue
                values = handle[name][()]
                if values.shape[0] != n_ids:
                    problems.append(f"{name}: {values.shape[0]} rows for {n_ids} ids")
                n_bad = int((~np.isfinite(values)).any(axis=1).sum())
                if n_bad:
                    problems.append(f"{name}: {n_bad} rows contain NaN or Inf")
    duplicates = [i for i, n in Counter(all_ids).items() if n > 1]
    if duplicates:
        problems.append(f"{len(duplicates)} duplicate ids, e.g. {duplicates[:3]}")
    return problems


def remove_store(path: Path) -> list[Path]:
    """Delete a store with its journal and lock; refuses while a writer holds the lock."""
    path = Path(path)
    removed = []
    with StoreLock(lock_path(path)):
        for candidate in (path, journal_dir(path)):
            if candidate.is_dir():
                shutil.rmtree(candidate)
                removed.append(candidate)
            elif candidate.exists():
                candidate.unlink()
                removed.append(candidate)
    return removed
