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
from medprobe.cache.inventory.catalog import StoreEntry, dataset_difference, refuse_copies
from medprobe.probe.stats.metrics import auroc_left_out

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


@dataclass(frozen=True)
class StoreTokens:
    """A store's token grids as the attentive probe reads them (`probe.fit.protocol.TokenSource`):
    only the rows asked for, from the file, at each call. `val_after_test`: the probes score the
    test rows followed by the val rows (to choose subgroup thresholds on val), so "test" rows
    from this index on are val's."""

    store: Store
    val_after_test: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.store.token_shape

    def read(self, split: str, rows: np.ndarray) -> np.ndarray:
        """(len(rows), T, D) float32, in the order of `rows`."""
        if split != "test" or self.val_after_test is None:
            return self.store.tokens(split, rows)
        rows = np.asarray(rows)
        in_val = rows >= self.val_after_test
        values = np.empty((len(rows), *self.shape), np.float32)
        if (~in_val).any():
            values[~in_val] = self.store.tokens("test", rows[~in_val])
        if in_val.any():
            values[in_val] = self.store.tokens("val", rows[in_val] - self.val_after_test)
        return values


def refuse_without_tokens(targets: Sequence[ProbeTarget]) -> None:
    """The attentive probe reads tokens: name every store without them, and the fix."""
    lacking = sorted({t.path.name for t in targets if not open_store(t.path).has_tokens})
    if lacking:
        raise ToolkitError(
            f"methods=['attentive'] needs each image's tokens, and {len(lacking)} store(s) hold "
            f"none: {', '.join(lacking)}; extract them again with `extract run --tokens 8`, or "
            "leave 'attentive' out of methods= (or pick stores with models=/datasets=)",
            argument="methods",
        )


def task_of(store: Store) -> dict[str, Any]:
    """The store's task, with defaults for stores written without one."""
    task = {"kind": "multiclass", "headline_metric": "accuracy", "label_names": []}
    task.update(store.task)
    return task


def read_split(store: Store, split: str, pooling: str) -> SplitArrays:
    return SplitArrays(
        store.ids(split), store.embeddings(split, pooling), read_labels(store, split)
    )


def headline_left_out(store: Store) -> dict[str, str]:
    """Labels a multi-label store's `mean_auroc` leaves out, with why: {label name: reason}.

    A label with no known positive (or no known negative) training image gets no probe, and one
    whose known test values are all of one outcome has no AUROC; the mean is over the rest, so a
    reader must be told which labels it does not cover. For a single-label store: the classes
    with no test image, which macro AUROC leaves out (`stats.metrics.auroc_left_out`) and
    macro F1 counts as 0 (`stats.metrics.absent_classes`)."""
    names = task_of(store)["label_names"]
    if task_of(store)["kind"] != "multilabel":
        labels = read_labels(store, "test")
        n_classes = max(len(names), int(labels.max()) + 1 if len(labels) else 0)
        return {
            names[c] if c < len(names) else str(c): "no test image: macro AUROC leaves it out "
            "and macro F1 counts it as 0"
            for c in auroc_left_out(labels, n_classes)
            if not (labels == c).any()
        }
    reasons: dict[str, str] = {}
    for split, where in (("train", "training"), ("test", "test")):
        labels = read_labels(store, split)
        for column in range(labels.shape[1]):
            name = names[column] if column < len(names) else str(column)
            if name in reasons:
                continue
            values = labels[:, column]
            missing = [w for w, v in (("positive", 1), ("negative", 0)) if not (values == v).any()]
            if missing:
                reasons[name] = f"no known {' or '.join(missing)} {where} image"
    return reasons


def read_labels(store: Store, split: str) -> np.ndarray:
    """(N,) int64 labels, or (N, L) int8 with -1 where the store's mask says unknown."""
    labels = store.labels(split)
    mask = store.label_mask(split)
    return labels if mask is None else np.where(mask, labels, -1).astype(np.int8)


def _progress(entry: StoreEntry) -> str:
    if entry.rows_done is None:
        return "its 'complete' flag is not set"
    return f"{entry.rows_done} of {entry.rows_total} rows written"


def _close(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    return f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(known)}"


def _left_out(entries: Sequence[StoreEntry], include_trials: bool) -> dict[str, list[StoreEntry]]:
    """Why entries are not probed, by reason, each logged as a warning naming the files."""
    left_out: dict[str, list[StoreEntry]] = defaultdict(list)
    for entry in entries:
        if entry.problem:
            logger.warning("not probed, %s: %s", entry.path, entry.problem)
            left_out["not stores"].append(entry)
        elif not entry.complete:
            logger.warning("not probed, not complete: %s (%s)", entry.path, _progress(entry))
            left_out["unfinished"].append(entry)
        elif entry.outdated:
            logger.warning("not probed, %s", entry.outdated)
            left_out["outdated"].append(entry)
        elif entry.trial and not include_trials:
            left_out["trial"].append(entry)
    trials = left_out.get("trial", [])
    if trials:
        logger.warning(
            "left out %d trial store(s) written with extract --limit (%s); pass "
            "include_trials=True (probe run --include-trials) to probe them",
            len(trials),
            ", ".join(e.path.name for e in trials),
        )
    return left_out


def select_targets(
    cache_root: Path,
    *,
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    poolings: Sequence[str] | None = None,
    include_trials: bool = False,
    require_comparable: bool = True,
) -> list[ProbeTarget]:
    """Every complete store under `cache_root` (filtered), one target per pooling.

    Left out with a warning: unfinished and outdated stores, files that are not stores (foreign
    or damaged), and trial stores (`extract run --limit`) unless `include_trials`. A store whose
    file name does not match its key is probed by the key inside, with a warning. Raises when
    nothing is there to probe, a filter names nothing, two files hold one key (reading both
    would count the store twice), or two stores of one dataset disagree on their images or
    labels (they would not be comparable; with `require_comparable`, as probes need:
    similarity matches images by id itself and passes False).
    """
    entries = list_stores(cache_root)
    left_out = _left_out(entries, include_trials)
    excluded = {id(e) for group in left_out.values() for e in group}
    probed = [e for e in entries if id(e) not in excluded]
    if not probed:
        counts = [f"{len(group)} {reason}" for reason, group in left_out.items()]
        hint = f" ({', '.join(counts)})" if counts else ""
        if left_out.get("not stores"):  # the likeliest cause: say which file and why
            first = left_out["not stores"][0]
            hint += f"; {first.path}: {first.problem}"
        trial_hint = ", pass include_trials=True" if left_out.get("trial") else ""
        raise ToolkitError(
            f"no complete stores under {cache_root}{hint}; run `extract run` first{trial_hint} "
            "or use another cache root"
        )
    for wanted, attribute, argument in (
        (datasets, "dataset", "datasets"),
        (models, "model", "models"),
    ):
        known = sorted({getattr(e, attribute) for e in probed})
        for name in wanted or []:
            if name not in known:
                _refuse_unknown(name, attribute, argument, known, left_out)
    probed = [
        e
        for e in probed
        if (not datasets or e.dataset in datasets) and (not models or e.model in models)
    ]
    refuse_copies(probed)
    for entry in probed:
        if entry.misnamed:
            logger.warning(
                "%s: its file name does not match the key inside, which decides; it should be "
                "named %s",
                entry.path,
                entry.misnamed,
            )
    by_dataset: dict[str, list[Store]] = defaultdict(list)
    for entry in probed:
        by_dataset[entry.dataset].append(open_store(entry.path))
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
                    f"poolings={list(poolings or [])}: store {store.path.name} "
                    f"has only {list(store.poolings)}",
                    argument="poolings",
                )
            targets += [ProbeTarget(dataset, label, p, store.path) for p in chosen]
    return targets


def _refuse_unknown(
    name: str,
    attribute: str,
    argument: str,
    known: Sequence[str],
    left_out: dict[str, list[StoreEntry]],
) -> None:
    """Raise for a `models`/`datasets` name with no probed store, saying why when one exists."""
    named = f"{argument}=[{name!r}]"
    pending = [e for e in left_out.get("unfinished", []) if getattr(e, attribute) == name]
    if pending:
        entry = pending[0]
        raise ToolkitError(
            f"{named}: the store for {name!r} ({entry.dataset} x {entry.model}) is not "
            f"complete ({_progress(entry)}); rerun the extraction, which resumes where "
            f"it stopped, or `cache rm {entry.path}`",
            argument=argument,
        )
    trials = [e for e in left_out.get("trial", []) if getattr(e, attribute) == name]
    if trials:
        raise ToolkitError(
            f"{named}: the only store for {name!r} is a trial on part of the images "
            f"({trials[0].path.name}, extract --limit); pass include_trials=True to probe it",
            argument=argument,
        )
    raise ToolkitError(
        f"{named}: no complete store for {name!r}{_close(name, known)}", argument=argument
    )


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
                    f"labels differ): {reference.path} vs {other.path}: "
                    f"{dataset_difference(reference, other)}"
                )


def _label_key(label: np.ndarray) -> Any:
    return tuple(label.tolist()) if np.ndim(label) else int(label)
