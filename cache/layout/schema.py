"""The store's on-disk schema, in one place. Plain h5py reads a store with this page alone.

```
<cache_root>/<dataset>/<model>--<key[:16]>.h5
  attrs:  format_version   int       content version (cache.key.CONTENT_VERSION), as in `spec`
          container_format int       CONTAINER_FORMAT; absent in stores of container format 2
          key              str       sha256 of the StoreSpec (see cache.key)
          spec             str JSON  dataset / model / preprocessing / poolings / dtype / task
          toolkit_version  str
          created_at       str       ISO 8601 UTC, when the first row was computed
          finished_at      str       ISO 8601 UTC
          complete         bool      True only once every row is written
          info             str JSON  facts that do not change the bytes (data root, split
                                     protocol, `limit` for a trial run on part of the images)
  /<split>/ids                (N,)    utf-8 str   image path relative to the dataset root
  /<split>/labels             (N,)    int64       class index, or (N, L) int8 for multi-label
  /<split>/label_mask         (N, L)  bool        multi-label only: False where a label is unknown
  /<split>/groups             (N,)    utf-8 str   patient / lesion id, when the dataset has one
  /<split>/metadata/<column> (N,)  utf-8 str   per-image facts from the dataset's own files
                                              (sex, age, view, `study`, ...); '' where missing.
                                              Outside the key: `cache annotate` adds them later
  /<split>/embeddings/<pool>  (N, D)  float16 (or float32), one dataset per pooling
  /<split>/tokens             (N, T, D) float16 only in a store extracted with `--tokens`:
                                      each image's token grid, chunked (1, T, D) (one image a
                                      chunk); attrs `token_grid` = [h, w] (the pooled grid, h*w
                                      patch positions, row-major) and `prefix_tokens` = p, the
                                      class/register tokens stored first (0 for CNNs and SAM),
                                      so T = p + h*w. The spec's `tokens` holds the same layout
                                      ({'grid', 'prefix_tokens', 'dim', ...}); absent otherwise.
  /skipped/ids, /skipped/reasons  (M,) utf-8 str  images left out under --on-error skip
```

Row i of every dataset in a split refers to the same image.

Two numbers version a store, for two different things. The *content version* (`spec`'s
`format_version`) is hashed into the key: it changes only when the embedding bytes for the same
inputs change, and a store of another content version is outdated. The *container format* says
how those bytes are packed and changes no key, so a new container never recomputes a store:

- 3: every dataset is chunked with HDF5's Fletcher-32 checksum filter, so damaged bytes fail the
  read instead of returning wrong numbers; strings are fixed-length UTF-8 (HDF5 cannot checksum
  variable-length strings, whose bytes live outside the dataset).
- 2 (no `container_format` attribute): no checksums, variable-length strings. Still read; `cache
  verify` says it carries no checksums.
"""

SPLITS = ("train", "val", "test")
EMBEDDINGS_GROUP = "embeddings"
TOKENS_DATASET = "tokens"
METADATA_GROUP = "metadata"
STUDY_COLUMN = "study"  # the metadata column naming an image's study (`--aggregate study`)
SKIPPED_GROUP = "skipped"
STORE_SUFFIX = ".h5"
JOURNAL_SUFFIX = ".journal"
LOCK_SUFFIX = ".lock"
CONTAINER_FORMAT = 3
CONTAINER_FORMAT_ATTR = "container_format"
UNCHECKSUMMED_CONTAINER_FORMAT = 2  # what a store without the attribute was written in
# What a store's `spec['task']` may say: what `cache verify` accepts and adapters declare.
TASK_KINDS = ("multiclass", "binary", "ordinal", "multilabel")
HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "quadratic_kappa", "mean_auroc")
