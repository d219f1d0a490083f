"""What is under a cache root: list, find and remove stores (and unfinished journals).

One key is one entry: two files that hold the same key are named together and refused where
reading both would count a store twice. A file under the root that is not a store is listed with
why, and never stops the listing of the others.
"""

import logging
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.atomic import TEMPORARY_MARK, remove_stale_temporaries
from medprobe.cache.files.disk import os_failure
from medprobe.cache.files.paths import (
    STORE_NAME,
    expected_location,
    journal_dir,
    lock_path,
    slug,
    store_of,
    store_path,
)
from medprobe.cache.journal import contiguous_parts, read_header
from medprobe.cache.key import StoreSpec
from medprobe.cache.layout.schema import JOURNAL_SUFFIX, STORE_SUFFIX
from medprobe.cache.lock import StoreLock
from medprobe.cache.opening import NotAStore, UnreadableFile, open_store, read_attrs
from medprobe.cache.reader import Store, display_model_name

logger = logging.getLogger(__name__)

REMOVE_FIX = "ask the folder's owner, or remount it writable"


@dataclass(frozen=True)
class StoreEntry:
    """One line of `cache ls`: a published store, a journal still being written, or a file under
    the root that is not a store (`problem` says why)."""

    path: Path
    dataset: str
    model: str
    key: str
    poolings: tuple[str, ...] = ()
    rows: dict[str, int] = field(default_factory=dict)
    dim: int | None = None
    dtype: str = ""
    size_bytes: int = 0
    complete: bool = False
    rows_done: int | None = None
    rows_total: int | None = None
    outdated: str | None = None  # why an earlier toolkit's store is not this one's result
    trial: bool = False  # written by `extract run --limit` on part of the images
    misnamed: Path | None = None  # where its key says it belongs, when it lies elsewhere
    same_key: tuple[Path, ...] = ()  # other files that hold the same key
    metadata: tuple[str, ...] = ()  # per-image metadata columns (sex, age, view, study, ...)
    problem: str | None = None  # "not a store: …", "damaged: …"

    @property
    def usable(self) -> bool:
        """A complete store that can be read (it may still be outdated, a trial or a copy)."""
        return self.complete and self.problem is None


def _not_a_store(path: Path, problem: str) -> StoreEntry:
    size = path.stat().st_size if path.is_file() else 0
    return StoreEntry(path, path.parent.name, path.name, "", size_bytes=size, problem=problem)


def _entry_for_store(path: Path) -> StoreEntry:
    try:
        store = open_store(path, require_complete=False)
    except NotAStore as error:
        return _not_a_store(path, f"not a store: {error.reason}")
    except UnreadableFile as error:
        return _not_a_store(path, f"{error.reason}: give this user read access (`chmod u+r`)")
    try:
        rows, dim, dtype = store.n_rows, store.dim, str(store.spec["dtype"])
        metadata = store.metadata_columns
    except (ToolkitError, OSError, KeyError, IndexError, ValueError) as error:
        return _not_a_store(path, f"damaged: {error}")
    expected = expected_location(path, store.dataset_name, store.model_id, store.key)
    return StoreEntry(
        path=path,
        dataset=store.dataset_name,
        model=store.model_name,
        key=store.key,
        poolings=store.poolings,
        rows=rows,
        dim=dim,
        dtype=dtype,
        size_bytes=path.stat().st_size,
        complete=store.complete,
        outdated=store.outdated,
        trial=store.trial,
        misnamed=None if expected == path else expected,
        metadata=metadata,
    )


def _entry_for_journal(journal: Path) -> StoreEntry | None:
    path = store_of(journal)
    try:
        header = read_header(journal)
        if header is None:
            return None
        spec = header["spec"]
        parts = contiguous_parts(journal)
        return StoreEntry(
            path=path,
            dataset=str(spec["dataset"]["name"]),
            model=display_model_name(spec["model"]),
            key=str(header["key"]),
            poolings=tuple(spec["poolings"]),
            dtype=str(spec["dtype"]),
            size_bytes=sum(p.stat().st_size for p in journal.iterdir()),
            rows_done=parts[-1][1] if parts else 0,
            rows_total=header.get("n_rows"),
        )
    except (ToolkitError, OSError, KeyError, TypeError) as error:
        return _not_a_store(journal, f"unfinished store with an unreadable journal: {error}")


def _with_copies_marked(entries: list[StoreEntry]) -> list[StoreEntry]:
    by_key: dict[str, list[StoreEntry]] = defaultdict(list)
    for entry in entries:
        if entry.usable:
            by_key[entry.key].append(entry)
    return [
        replace(e, same_key=tuple(o.path for o in by_key[e.key] if o is not e))
        if e.usable and len(by_key[e.key]) > 1
        else e
        for e in entries
    ]


def _children(folder: Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        return sorted(entries, key=lambda e: e.name)


def _unreadable_folder(path: Path, error: OSError) -> StoreEntry:
    """An entry for a folder that could not be read: listed (and failing `cache verify`), never
    skipped as if it held nothing."""
    problem = (
        f"cannot read this folder ({error.strerror or error}): any store in it is not listed; "
        "give this user read access (`chmod u+rx`) or move it out of the cache root"
    )
    return StoreEntry(path, path.name, "", "", problem=problem)


def _entry_for_file(path: Path) -> StoreEntry | None:
    """The entry for `<folder>/<name>.h5` or `.journal`, or None for what is not one of them."""
    if path.name.endswith(JOURNAL_SUFFIX) and path.is_dir():
        return _entry_for_journal(path)
    if not path.name.endswith(STORE_SUFFIX):
        return None
    if path.is_file():
        return _entry_for_store(path)
    what = "a folder" if path.is_dir() else "not a regular file (a broken link?)"
    return _not_a_store(path, f"not a store: {what} where a store file is expected")


def _in_the_root(root: Path, entry: StoreEntry | None) -> StoreEntry | None:
    """A store placed directly in the cache root: listed, with where it belongs, and not
    probed there (every store lives in its dataset's folder, which is what keys a location)."""
    if entry is None or entry.problem or not entry.path.is_file():
        return entry
    belongs = root / slug(entry.dataset) / entry.path.name
    return replace(
        entry,
        misnamed=None,
        problem=f"placed directly in the cache root, so not probed: move it to {belongs}",
    )


def list_stores(cache_root: Path) -> list[StoreEntry]:
    """Every store, unfinished journal and foreign `.h5` file under `cache_root`, sorted by
    dataset then model. Stores live in `<root>/<dataset>/`; one placed directly in the root is
    listed too (its expected place is named, as for any misnamed store). A folder that cannot be
    read is an entry with a problem, not a silent gap."""
    root = Path(cache_root)
    if not root.is_dir():
        return []
    try:
        top = _children(root)
    except OSError as error:
        raise ToolkitError(
            f"cannot read the cache root {root} ({error.strerror or error}); give this user "
            "read access or pass --cache-dir to name another root"
        ) from error
    entries = []
    for child in top:
        path = Path(child.path)
        if not child.is_dir() or child.name.endswith(JOURNAL_SUFFIX):
            entries.append(_in_the_root(root, _entry_for_file(path)))
            continue
        try:
            inside = _children(path)
        except OSError as error:
            entries.append(_unreadable_folder(path, error))
            continue
        entries += [_entry_for_file(Path(e.path)) for e in inside]
    return sorted(
        _with_copies_marked([e for e in entries if e is not None]),
        key=lambda e: (e.dataset, e.model, e.key, str(e.path)),
    )


def refuse_copies(entries: list[StoreEntry]) -> None:
    """Raise when two of `entries` hold one key: reading both would count a store twice (as
    extra seeds, say). Names every file and which to remove."""
    for entry in entries:
        if entry.same_key:
            files = sorted([entry.path, *entry.same_key])
            misnamed = [e.path for e in entries if e.path in files and e.misnamed]
            copies = misnamed if 0 < len(misnamed) < len(files) else files[1:]
            raise ToolkitError(
                f"{len(files)} files hold one store (key {entry.key[:16]}): "
                f"{', '.join(map(str, files))}; one key is one store, so keep one: "
                f"`cache rm {' '.join(map(str, copies))}`"
            )


def dataset_difference(a: Store, b: Store) -> str:
    """What differs between the datasets two stores of one dataset name were extracted from,
    and the fix: another folder under the same name, a trial beside a full run, other adapter
    options, or (none of these) data that changed between the two extractions."""
    spec_a, spec_b = _flat(a.spec["dataset"]), _flat(b.spec["dataset"])
    for fact in ("data_root", "limit"):
        spec_a[fact], spec_b[fact] = a.info.get(fact), b.info.get(fact)
    facts = [
        (key, spec_a.get(key), spec_b.get(key))
        for key in sorted(set(spec_a) | set(spec_b))
        if key not in ("fingerprint", "sources") and spec_a.get(key) != spec_b.get(key)
    ]
    if not facts:
        return (
            "both were extracted from the same folder with the same options, so the images or "
            "labels changed in between; `cache rm` the stale one and extract it again"
        )
    differs = "; ".join(f"{key} {left!r} vs {right!r}" for key, left, right in facts)
    keys = {key for key, _, _ in facts}
    if "data_root" in keys:
        fix = (
            "two datasets share one name: extract each under its own (`extract run --option "
            "name=NAME`, e.g. name=skin-a), then `cache rm` the stores under the shared name"
        )
    elif "limit" in keys:
        fix = "a trial run (--limit) sits beside another run: `cache rm` the one you do not want"
    else:
        fix = "extracted with different dataset options: `cache rm` the one you do not want"
    return f"they differ in {differs}; {fix}"


def _flat(section: dict) -> dict:
    """`{"options": {"seed": 7}}` as `{"options.seed": 7}`: one fact per differing value."""
    flat = {}
    for key, value in section.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": v for inner, v in _flat(value).items()})
        else:
            flat[key] = value
    return flat


def complete_stores(cache_root: Path) -> list[Store]:
    """Every complete store under `cache_root`, opened for reading, one per key."""
    entries = [e for e in list_stores(cache_root) if e.usable]
    refuse_copies(entries)
    return [open_store(e.path) for e in entries]


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


def remove_stale_files(cache_root: Path) -> list[Path]:
    """Remove the temporaries under `cache_root` left by killed runs (their pid is dead): a
    killed assembly leaves one as large as its store. Returns what was removed."""
    root = Path(cache_root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for folder in {p.parent for p in root.rglob(f".*{TEMPORARY_MARK}*")}:
        try:
            removed += remove_stale_temporaries(folder)
        except OSError as error:  # a read-only cache: listing goes on, nothing is removed
            logger.warning("cannot remove stale temporaries in %s: %s", folder, error)
    return removed


def removal_target(cache_root: Path, path: Path) -> Path:
    """The store `path` names for `cache rm`: a store file under `cache_root`, or its journal,
    lock or temporary. Anything else (a folder, a file that is not a store, a path outside the
    root) is refused by name."""
    root = Path(os.path.abspath(cache_root))
    given = Path(os.path.abspath(path))
    store = store_of(given)
    refuse = f"`cache rm` removes only stores under the cache root {root}"
    if root not in store.parents:
        raise ToolkitError(
            f"{given} is not under the cache root {root}; {refuse} (pass --cache-dir to name "
            "another root)"
        )
    if given.is_dir() and given != journal_dir(store):
        raise ToolkitError(f"{given} is a folder; {refuse}: name a store's .h5 file")
    if store.suffix != STORE_SUFFIX:
        raise ToolkitError(f"{given} is not a store; {refuse} (.h5 files)")
    if store.is_file() and not STORE_NAME.match(store.name):
        try:
            attrs = read_attrs(store)
        except NotAStore as error:
            raise ToolkitError(f"{store} is not a store ({error.reason}); {refuse}") from error
        if "key" not in attrs or "spec" not in attrs:
            raise ToolkitError(
                f"{store} is not a store (an HDF5 file without a store's 'key' and 'spec'); "
                f"{refuse}; delete it yourself if you mean to"
            )
    companions = [store, journal_dir(store), lock_path(store), *_temporaries_of(store)]
    if not any(c.exists() for c in companions):
        raise ToolkitError(f"nothing to remove at {given}: no store, journal or lock there")
    return store


def _temporaries_of(store: Path) -> list[Path]:
    """`.<store>.tmp-<pid>` beside `store` (listed, not globbed: a name may hold `[`)."""
    if not store.parent.is_dir():
        return []
    prefix = f".{store.name}{TEMPORARY_MARK}"
    return sorted(p for p in store.parent.iterdir() if p.name.startswith(prefix))


def remove_store(path: Path) -> list[Path]:
    """Delete a store with its journal, temporaries and lock. Refused while a writer holds the
    lock, which removing its journal would crash."""
    path = Path(path)
    removed = []
    try:
        with StoreLock(lock_path(path)):
            for candidate in (path, journal_dir(path), *_temporaries_of(path)):
                if candidate.is_dir():
                    shutil.rmtree(candidate)
                    removed.append(candidate)
                elif candidate.exists():
                    candidate.unlink()
                    removed.append(candidate)
    except OSError as error:
        raise os_failure(error, path, doing="removing", fix=REMOVE_FIX) from error
    return removed
