"""What sound store content looks like, checked the same way by the reader and by `cache verify`:
finite embeddings, class indices within the task's classes, multi-label values in {0, 1}.

A store whose bytes were overwritten (random bytes, a label of 7e9) must stop the reader with its
name and what is wrong, not reach a probe as chance-level scores or a 2.8 TB allocation.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

# Rows per block when scanning an array: bounded memory for the boolean mask of any store.
SCAN_ROWS = 1 << 16


def nonfinite_rows(values: Any, block_rows: int = SCAN_ROWS) -> int:
    """How many rows of `values` ((N, D) array or h5py dataset) hold a NaN or an Inf; reads an
    h5py dataset `block_rows` at a time, so a store larger than memory can be scanned."""
    n_bad = 0
    for start in range(0, values.shape[0], block_rows):
        block = np.asarray(values[start : start + block_rows])
        n_bad += int((~np.isfinite(block)).any(axis=tuple(range(1, block.ndim))).sum())
    return n_bad


def label_problems(
    labels: np.ndarray, mask: np.ndarray | None, task: Mapping[str, Any], n_store_rows: int
) -> list[str]:
    """What is wrong with one split's `labels` ((N,) class indices, or (N, L) multi-label with
    `mask` (N, L) bool) under the store's `task`; an empty list when nothing is.

    The class count is `len(task['label_names'])`; a store written without label names bounds a
    class index by its number of rows instead (a dense index cannot exceed it).
    """
    names = list(task.get("label_names") or [])
    multilabel = task.get("kind") == "multilabel" or labels.ndim == 2
    if not np.issubdtype(labels.dtype, np.integer):
        return [f"labels are {labels.dtype}, not integers"]
    if multilabel:
        return _multilabel_problems(labels, mask, names)
    if labels.ndim != 1:
        return [f"labels have shape {labels.shape}; a single-label store holds (N,)"]
    if labels.size == 0:
        return []
    n_classes = len(names) or n_store_rows
    low, high = int(labels.min()), int(labels.max())
    if low >= 0 and high < n_classes:
        return []
    bad = int(((labels < 0) | (labels >= n_classes)).sum())
    limit = f"the task has {n_classes} classes" if names else f"the store has {n_classes} rows"
    return [f"{bad} labels lie outside [0, {n_classes}) (from {low} to {high}) but {limit}"]


def _multilabel_problems(labels: np.ndarray, mask: np.ndarray | None, names: list[str]) -> list:
    if labels.ndim != 2:
        return [f"multi-label labels have shape {labels.shape}, not (N, L)"]
    problems = []
    if names and labels.shape[1] != len(names):
        problems.append(f"labels have {labels.shape[1]} columns for {len(names)} label names")
    if mask is None:
        mask = np.ones(labels.shape, dtype=bool)
    elif mask.shape != labels.shape:
        return [*problems, f"label_mask has shape {mask.shape} for labels of {labels.shape}"]
    outside = mask.astype(bool, copy=False) & (labels != 0) & (labels != 1)
    if outside.any():
        problems.append(f"{int(outside.sum())} known multi-label values are not 0 or 1")
    return problems
