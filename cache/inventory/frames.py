"""The cache as a notebook wants it: `mp.stores()` as a DataFrame, `mp.load(...)` as arrays."""

import difflib
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.root import resolve_cache_root
from medprobe.cache.inventory.catalog import StoreEntry, list_stores
from medprobe.cache.layout.schema import SPLITS
from medprobe.cache.opening import open_store


def _status(entry: StoreEntry) -> str:
    if not entry.complete:
        return f"incomplete ({entry.rows_done}/{entry.rows_total} rows)"
    return "outdated" if entry.outdated else "complete"


def stores(cache_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """One row per store (and unfinished journal) under the cache root: dataset, model, key,
    poolings, rows per split, dim, dtype, status (complete | outdated | incomplete), metadata
    (the per-image metadata columns, comma-separated), size, path."""
    root = resolve_cache_root(cache_dir)
    columns = ["dataset", "model", "key", "poolings", *SPLITS, "dim", "dtype", "status"]
    rows = [
        {
            "dataset": e.dataset,
            "model": e.model,
            "key": e.key[:16],
            "poolings": ",".join(e.poolings),
            **{split: e.rows.get(split, 0) if e.complete else pd.NA for split in SPLITS},
            "dim": e.dim,
            "dtype": e.dtype,
            "status": _status(e),
            "metadata": ",".join(e.metadata),
            "size_bytes": e.size_bytes,
            "path": str(e.path),
        }
        for e in list_stores(root)
    ]
    return pd.DataFrame(rows, columns=[*columns, "metadata", "size_bytes", "path"])


def _choices(names: Sequence[str]) -> str:
    return ", ".join(sorted(set(names))) or "none"


def load(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    dataset: str,
    model: str,
    pooling: str | None = None,
    split: str = "train",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, ids) of one split of one complete store.

    X (N, D) float32 embeddings; y (N,) int64 class indices, or (N, L) int8 for multi-label with
    -1 where a label is unknown; ids (N,) str image ids. `model` may carry a key prefix
    (`name@1a2b3c4d`) when two stores of one model exist (other preprocessing or weights);
    `pooling` may be left out when the store has only one.
    """
    root = resolve_cache_root(cache_dir)
    entries = [e for e in list_stores(root) if e.complete and not e.outdated]
    of_dataset = [e for e in entries if e.dataset == dataset]
    if not of_dataset:
        close = difflib.get_close_matches(dataset, [e.dataset for e in entries], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ToolkitError(
            f"dataset={dataset!r}: no complete store under {root}{hint} "
            f"(datasets: {_choices([e.dataset for e in entries])})",
            argument="dataset",
        )
    name, _, key_prefix = model.partition("@")
    matches = [e for e in of_dataset if e.model == name and e.key.startswith(key_prefix)]
    if not matches:
        raise ToolkitError(
            f"model={model!r}: no complete {dataset} store; models: "
            f"{_choices([e.model for e in of_dataset])}",
            argument="model",
        )
    if len(matches) > 1:
        options = ", ".join(f"{e.model}@{e.key[:8]} ({e.path.name})" for e in matches)
        raise ToolkitError(
            f"model={model!r}: {len(matches)} {dataset} stores of this model (other "
            f"preprocessing or weights); name one with its key: {options}",
            argument="model",
        )
    store = open_store(matches[0].path)
    if pooling is None:
        if len(store.poolings) > 1:
            raise ToolkitError(
                f"pooling=None: {store.path.name} holds {list(store.poolings)}; choose one",
                argument="pooling",
            )
        pooling = store.poolings[0]
    if pooling not in store.poolings:
        raise ToolkitError(
            f"pooling={pooling!r}: {store.path.name} holds {list(store.poolings)}",
            argument="pooling",
        )
    if split not in store.splits:
        raise ToolkitError(
            f"split={split!r}: {store.path.name} holds {list(store.splits)}", argument="split"
        )
    labels = store.labels(split)
    mask = store.label_mask(split)
    if mask is not None:
        labels = np.where(mask, labels, -1).astype(np.int8)
    return store.embeddings(split, pooling), labels, store.ids(split)
