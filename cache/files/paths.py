"""Where a store and its companions live: `<root>/<dataset>/<model>--<key[:16]>.h5`, with its
journal (`.journal/`), writer lock (`.lock`) and temporaries (`.<name>.tmp-<pid>`) beside it."""

import re
from pathlib import Path

from medprobe.cache.files.atomic import TEMPORARY_MARK
from medprobe.cache.key import StoreSpec
from medprobe.cache.layout.schema import JOURNAL_SUFFIX, LOCK_SUFFIX, STORE_SUFFIX

# `<model slug>--<16 hex digits of the key>.h5`: what the toolkit names a store.
STORE_NAME = re.compile(r"^[\w.-]+--[0-9a-f]{16}\.h5$")


def slug(name: str) -> str:
    """A file-name-safe form of a dataset or model name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def store_file_name(model: str, key: str) -> str:
    """`<model>--<key[:16]>.h5`: a readable name with a content-addressed suffix."""
    return f"{slug(model)}--{key[:16]}{STORE_SUFFIX}"


def store_path(cache_root: Path, spec: StoreSpec) -> Path:
    """`<root>/<dataset>/<model>--<key[:16]>.h5`."""
    dataset_dir = Path(cache_root) / slug(spec.dataset["name"])
    return dataset_dir / store_file_name(spec.model["name"], spec.key())


def expected_location(path: Path, dataset: str, model: str, key: str) -> Path:
    """Where the store at `path` belongs by its content: the same root, its own name."""
    return Path(path).parent.parent / slug(dataset) / store_file_name(model, key)


def journal_dir(path: Path) -> Path:
    return path.with_name(path.name + JOURNAL_SUFFIX)


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)


def store_of(path: Path) -> Path:
    """The store a companion belongs to (`x.h5.journal`, `x.h5.lock`, `.x.h5.tmp-<pid>` -> `x.h5`);
    any other path is returned as it is."""
    path = Path(path)
    name = path.name
    if name.startswith(".") and TEMPORARY_MARK in name:
        name = name[1:].rpartition(TEMPORARY_MARK)[0]
    for suffix in (JOURNAL_SUFFIX, LOCK_SUFFIX):
        if name.endswith(STORE_SUFFIX + suffix):
            name = name.removesuffix(suffix)
    return path.with_name(name)
