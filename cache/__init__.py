"""The embedding store: HDF5 files keyed by content, resumable, never half-published.

Knows nothing of models or probes. `extract` writes through `StoreWriter`; `probe` reads through
`open_store` / `complete_stores`. The schema is documented in `cache.layout.schema`.
"""

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.paths import store_path
from medprobe.cache.files.root import resolve_cache_root
from medprobe.cache.inventory.catalog import complete_stores, find_complete_store, list_stores
from medprobe.cache.inventory.verify import verify_store
from medprobe.cache.key import StoreSpec
from medprobe.cache.opening import open_store
from medprobe.cache.reader import Store
from medprobe.cache.rows import RowTable
from medprobe.cache.writer import StoreWriter

__all__ = [
    "RowTable",
    "Store",
    "StoreSpec",
    "StoreWriter",
    "ToolkitError",
    "complete_stores",
    "find_complete_store",
    "list_stores",
    "open_store",
    "resolve_cache_root",
    "store_path",
    "verify_store",
]
