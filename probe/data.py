"""Which stores to probe, checked for consistency, and their arrays by split."""

import difflib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medprobe.cache import Store, ToolkitError, list_stores, open_store
from medprobe.cache.catalog import StoreEntry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeTarget:
    """One (store, pooling) to probe; `model` is unique within its dataset."""

    dataset: str
    model: str
    pooling: str
    path: Path


@dataclass(frozen=True)
class SplitArrays:
    """ids (N,) str; embeddings (N, D) float32; labels (N,) int64 or (N, L) int8 with -1 unknown."""

    ids: np.ndarray
    embeddings: np.ndarray
    labels: np.ndarray


def task_of(store: Store) -> dict[str, Any]:
    """The store's task, with defaults for stores written without one."""
    task = {"kind": "multiclass", "headline_metric": "accuracy", "label_names": []}
    task.update(store.task)
    return task


def read_split(store: Store, split: str, pooling: str) -> SplitArrays:
    labels = store.labels(split)
    mask = store.label_mask(split)
    if mask is not None:
        labels = np.where(mask, labels, -1).astype(np.int8)
    return SplitArrays(store.ids(split), store.embeddings(split, pooling), labels)


def _progress(entry: StoreEntry) -> str:
    if entry.rows_done is None:
        return "its 'complete' flag is not set"
    return f"{entry.rows_done} of {entry.rows_total} rows written"


def _close(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    return f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(known)}"


def select_targets(
    cache_root: Path,
    *,
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    poolings: Sequence[str] | None = None,
    require_comparable: bool = True,
) -> list[ProbeTarget]:
    """Every complete store under `cache_root` (filtered), one target per pooling.

    Raises when nothing is there to probe, a filter names nothing, or (with
    `require_comparable`, as probes need) two stores of one dataset disagree on their images or
    labels, or lack a train or test split. Similarity matches images by id itself and passes
    False.
    """
    entries = list_stores(cache_root)
    unfinished = [e for e in entries if not e.complete]
    for entry in unfinished:
        logger.warning("not probed, not complete: %s (%s)", entry.path, _progress(entry))
    outdated = [e for e in entries if e.complete and e.outdated]
    for entry in outdated:
        logger.warning("not probed, %s", entry.outdated)
    stores = [open_store(e.path) for e in entries if e.complete and not e.outdated]
    if not stores:
        left_out = [f"{len(unfinished)} unfinished"] * bool(unfinished)
        left_out += [f"{len(outdated)} outdated"] * bool(outdated)
        hint = f" ({', '.join(left_out)})" if left_out else ""
        raise ToolkitError(
            f"no complete stores under {cache_root}{hint}; run `extract run` first "
            "or pass --cache-dir"
        )
    for wanted, attribute, entry_attribute, flag in (
        (datasets, "dataset_name", "dataset", "--datasets"),
        (models, "model_name", "model", "--models"),
    ):
        known = sorted({getattr(s, attribute) for s in stores})
        for name in wanted or []:
            if name in known:
                continue
            pending = [e for e in unfinished if getattr(e, entry_attribute) == name]
            if pending:
                entry = pending[0]
                raise ToolkitError(
                    f"{flag}: the store for {name!r} ({entry.dataset} x {entry.model}) is not "
                    f"complete ({_progress(entry)}); rerun the extraction, which resumes where "
                    f"it stopped, or `cache rm {entry.path}`"
                )
            raise ToolkitError(f"{flag}: no complete store for {name!r}{_close(name, known)}")
    stores = [
        s
        for s in stores
        if (not datasets or s.dataset_name in datasets) and (not models or s.model_name in models)
    ]
    by_dataset: dict[str, list[Store]] = defaultdict(list)
    for store in stores:
        by_dataset[store.dataset_name].append(store)
    targets = []
    for dataset, members in sorted(by_dataset.items()):
        if require_comparable:
            _check_comparable(dataset, members)
        names = [s.model_name for s in members]
        for store in sorted(members, key=lambda s: (s.model_name, s.key)):
            label = store.model_name
            if names.count(label) > 1:
                label = f"{label}@{store.key[:8]}"
            chosen = [p for p in store.poolings if not poolings or p in poolings]
            if not chosen:
                raise ToolkitError(
                    f"--poolings {list(poolings or [])}: store {store.path.name} "
                    f"has only {list(store.poolings)}"
                )
            targets += [ProbeTarget(dataset, label, p, store.path) for p in chosen]
    return targets


def _check_comparable(dataset: str, stores: list[Store]) -> None:
    """All stores of a dataset must hold the same images with the same labels per split."""
    reference = stores[0]
    for split in ("train", "test"):
        if split not in reference.splits:
            raise ToolkitError(
                f"store {reference.path} has no {split!r} split; probes need train and test"
            )
    reference_rows = {
        s: dict(zip(reference.ids(s), map(_label_key, reference.labels(s)), strict=True))
        for s in reference.splits
    }
    for other in stores[1:]:
        for split in set(reference.splits) | set(other.splits):
            rows = (
                dict(zip(other.ids(split), map(_label_key, other.labels(split)), strict=True))
                if split in other.splits
                else {}
            )
            expected = reference_rows.get(split, {})
            if rows != expected:
                differing = len(set(rows.items()) ^ set(expected.items()))
                raise ToolkitError(
                    f"stores of {dataset} disagree on the {split} split ({differing} ids or "
                    f"labels differ): {reference.path.name} vs {other.path.name}. Were they "
                    "extracted with different --limit or dataset options? Pick one with "
                    "--models, or `cache rm` the stale one."
                )


def _label_key(label: np.ndarray) -> Any:
    return tuple(label.tolist()) if np.ndim(label) else int(label)
