"""The embedding store: HDF5 files keyed by content, resumable, never half-published.

Knows nothing of models or probes. `extract` writes through `StoreWriter`; `probe` reads through
`open_store` / `complete_stores`. The schema is documented in `cache.schema`.
"""

from cache.catalog import complete_stores, find_complete_store, list_stores, verify_store
from cache.errors import ToolkitError
from cache.key import StoreSpec
from cache.reader import Store, open_store
from cache.root import resolve_cache_root
from cache.rows import RowTable
from cache.writer import StoreWriter, store_path

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
