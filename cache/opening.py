"""Opening a file as a store: refused, with the fix, when it is no store (foreign, truncated, a
spec that does not parse), cannot be read by this user, or is not complete yet."""

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.layout.schema import STORE_SUFFIX
from medprobe.cache.reader import Store


class NotAStore(ToolkitError):
    """A file where a store was expected that is none: foreign, truncated, or with a spec that
    does not parse. `reason` says which, without the path."""

    def __init__(self, path: Path, reason: str) -> None:
        if Path(path).suffix == STORE_SUFFIX:
            fix = (
                f"If it is a damaged store, `cache rm {path}` and extract again; if it is a file "
                "of yours, move it out of the cache root"
            )
        else:  # never advise removing a file that does not even look like a store
            fix = "Stores are the .h5 files under a cache root (`cache ls` lists them)"
        super().__init__(f"{path} is not a store: {reason}. {fix}")
        self.reason = reason


class UnreadableFile(ToolkitError):
    """A file this process may not read (permissions, a broken link): not "not a store", which
    would advise removing what may be a sound store. `reason` says why, without the path."""

    def __init__(self, path: Path, error: OSError) -> None:
        self.reason = f"cannot be read ({error.strerror or error})"
        super().__init__(
            f"{path} {self.reason}; give this user read access (e.g. `chmod u+r`) or run as the "
            "file's owner"
        )


def read_attrs(path: Path) -> dict[str, Any]:
    """The root attributes of an HDF5 file, decoded to Python values."""
    try:  # h5py reports a permission problem as "unable to open file": ask the OS first
        with open(path, "rb"):
            pass
    except OSError as error:
        raise UnreadableFile(path, error) from error
    try:
        with h5py.File(path, "r") as handle:
            return {
                k: (v.item() if isinstance(v, np.generic) else v) for k, v in handle.attrs.items()
            }
    except OSError as error:
        raise NotAStore(path, f"not a readable HDF5 file ({error})") from error


def open_store(path: str | Path, *, require_complete: bool = True) -> Store:
    """Open a store for reading; an incomplete one is refused unless asked for, and a file that
    is not a store is refused naming what it lacks (NotAStore)."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"no store at {path}")
    attrs = read_attrs(path)
    if "spec" not in attrs or "key" not in attrs:
        raise NotAStore(path, "an HDF5 file without a store's 'key' and 'spec' attributes")
    store = Store(path=path, attrs=attrs)
    try:
        store.dataset_name, store.model_name, store.poolings  # noqa: B018 (parse now, not later)
    except (ValueError, KeyError, TypeError) as error:
        raise NotAStore(path, f"its 'spec' attribute does not parse ({error!r})") from error
    if require_complete and not store.complete:
        raise ToolkitError(f"store {path} is not complete; rerun the extraction that writes it")
    return store
