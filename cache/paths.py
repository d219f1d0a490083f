"""Where a store and its companions live: `<root>/<dataset>/<model>--<key[:16]>.h5`, with its
journal (`.journal/`) and writer lock (`.lock`) beside it."""

from pathlib import Path

from medprobe.cache.key import StoreSpec
from medprobe.cache.schema import JOURNAL_SUFFIX, LOCK_SUFFIX


def slug(name: str) -> str:
    """A file-name-safe form of a dataset or model name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def store_path(cache_root: Path, spec: StoreSpec) -> Path:
    """`<root>/<dataset>/<model>--<key[:16]>.h5`: readable names, content-addressed suffix."""
    dataset_dir = Path(cache_root) / slug(spec.dataset["name"])
    return dataset_dir / f"{slug(spec.model['name'])}--{spec.key()[:16]}.h5"


def journal_dir(path: Path) -> Path:
    return path.with_name(path.name + JOURNAL_SUFFIX)


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)
