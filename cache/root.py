"""Where stores live: `--cache-dir`, else `$MEDPROBE_CACHE_DIR`, else `./embeddings`."""

import os
from pathlib import Path

CACHE_DIR_ENV = "MEDPROBE_CACHE_DIR"
DEFAULT_CACHE_DIR = "embeddings"


def resolve_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root to use, by precedence: the explicit argument, the env var, the default."""
    chosen = cache_dir or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    return Path(chosen).expanduser()
