"""Adding per-image metadata to a finished store without running a model again.

Metadata (sex, age, view, study, ...) is outside the store key (see `cache.rows`), so a store
extracted before its dataset's adapter recorded metadata gains it here: the file is copied under a
temporary name, its `<split>/metadata/` group is written (replacing any earlier one), and the copy
is renamed into place. Key, spec and every embedding byte stay as they were.
"""

import csv
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py

from medprobe.cache.assemble import write_metadata
from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.atomic import write_atomically
from medprobe.cache.files.paths import lock_path
from medprobe.cache.layout.schema import METADATA_GROUP
from medprobe.cache.lock import StoreLock
from medprobe.cache.opening import open_store
from medprobe.cache.reader import Store
from medprobe.cache.rows import check_metadata_column, metadata_value


def annotate_store(
    path: str | Path, ids: Sequence[str], metadata: Mapping[str, Sequence[str]]
) -> Store:
    """Write `metadata` (column -> one value per entry of `ids`, '' missing) into the store at
    `path`, matched by image id. Every image of the store must be among `ids`; extra ids (images
    the store left out) are ignored. Returns the store as reopened."""
    store = open_store(path)
    for column, values in metadata.items():
        check_metadata_column(column, len(values), len(ids))
    if not metadata:
        raise ToolkitError(f"nothing to annotate {store.path} with: no metadata columns given")
    position = {image_id: i for i, image_id in enumerate(ids)}
    by_split: dict[str, dict[str, list[str]]] = {}
    for split in store.splits:
        store_ids = store.ids(split)
        absent = [i for i in store_ids if i not in position]
        if absent:
            raise ToolkitError(
                f"{len(absent)} image(s) of {store.path.name} {split} have no metadata row, e.g. "
                f"{absent[:3]}; the table's ids must be the store's (paths relative to the "
                "dataset root)"
            )
        rows = [position[i] for i in store_ids]
        by_split[split] = {c: [metadata_value(v[r]) for r in rows] for c, v in metadata.items()}

    def rewrite(tmp: Path) -> None:
        shutil.copyfile(store.path, tmp)
        with h5py.File(tmp, "a") as handle:
            for split, columns in by_split.items():
                if METADATA_GROUP in handle[split]:
                    del handle[split][METADATA_GROUP]
                write_metadata(handle[split], columns)

    with StoreLock(lock_path(store.path)):
        write_atomically(store.path, rewrite)
    return open_store(store.path)


def read_metadata_table(
    table: str | Path, id_column: str = "id"
) -> tuple[list[str], dict[str, list[str]]]:
    """(ids, column -> values) from a CSV whose `id_column` holds image ids; every other column
    is metadata."""
    table = Path(table)
    with open(table, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        if id_column not in header:
            raise ToolkitError(
                f"{table}: no {id_column!r} column (it has {header}); name the id column with "
                "--id-column"
            )
        records = list(reader)
    columns = [c for c in header if c != id_column]
    ids = [r[id_column] for r in records]
    return ids, {c: [r[c] or "" for r in records] for c in columns}
