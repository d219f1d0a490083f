"""Where stores live: `--cache-dir`, else `$MEDPROBE_CACHE_DIR`, else `./embeddings`."""

import os
from pathlib import Path

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.disk import existing_ancestor

CACHE_DIR_ENV = "MEDPROBE_CACHE_DIR"
DEFAULT_CACHE_DIR = "embeddings"


def resolve_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root to use, by precedence: the explicit argument, the env var, the default.

    Refused when it (or a folder on its way) is a file: every later step would fail on it with a
    less clear error. A root that does not exist yet is fine; the first store creates it.
    """
    if cache_dir:
        root, named = Path(cache_dir).expanduser(), f"cache_dir={str(cache_dir)!r}"
    elif os.environ.get(CACHE_DIR_ENV):
        value = os.environ[CACHE_DIR_ENV]
        root, named = Path(value).expanduser(), f"${CACHE_DIR_ENV}={value!r}"
    else:
        root, named = Path(DEFAULT_CACHE_DIR), f"the default cache root {DEFAULT_CACHE_DIR!r}"
    blocker = existing_ancestor(root)
    if not blocker.is_dir():
        where = (
            "is a file" if blocker == Path(os.path.abspath(root)) else f"lies in {blocker}, a file"
        )
        raise ToolkitError(
            f"{named} {where}: the cache root must be a folder; name another one",
            argument="cache_dir" if cache_dir else None,
        )
    return root
