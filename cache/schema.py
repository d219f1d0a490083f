"""The store's on-disk schema, in one place. Plain h5py reads a store with this page alone.

```
<cache_root>/<dataset>/<model>--<key[:16]>.h5
  attrs:  format_version  int       STORE_FORMAT_VERSION
          key             str       sha256 of the StoreSpec (see cache.key)
          spec            str JSON  dataset / model / preprocessing / poolings / dtype / task
          toolkit_version str
          created_at      str       ISO 8601 UTC, when the first row was computed
          finished_at     str       ISO 8601 UTC
          complete        bool      True only once every row is written
          info            str JSON  facts that do not change the bytes (data root, split protocol)
  /<split>/ids                (N,)    utf-8 str   image path relative to the dataset root
  /<split>/labels             (N,)    int64       class index, or (N, L) int8 for multi-label
  /<split>/label_mask         (N, L)  bool        multi-label only: False where a label is unknown
  /<split>/groups             (N,)    utf-8 str   patient / lesion id, when the dataset has one
  /<split>/embeddings/<pool>  (N, D)  float16 (or float32), one dataset per pooling
  /skipped/ids, /skipped/reasons  (M,) utf-8 str  images left out under --on-error skip
```

Row i of every dataset in a split refers to the same image.
"""

SPLITS = ("train", "val", "test")
SPLIT_ATTR_KEYS = ("ids", "labels", "label_mask", "groups")
EMBEDDINGS_GROUP = "embeddings"
SKIPPED_GROUP = "skipped"
STORE_SUFFIX = ".h5"
JOURNAL_SUFFIX = ".journal"
LOCK_SUFFIX = ".lock"
