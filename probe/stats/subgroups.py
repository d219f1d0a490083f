"""For whom a probe fails: its headline metric per group of a metadata column (sex, age, view),
the gap between the best and the worst group, the worst group's value, equalized-odds gaps and
per-group calibration, every number also on each test resample so it carries an interval.

The resamples are the dataset's shared test resamples (`scoring.shared_test_resamples`): a
group's value on resample b is the metric on that resample's images of the group, so every
group, gap and model is scored on the same draws and differences between models are paired.
A group where a metric is undefined (AUROC of a group holding one class; no image at all) gets
NaN with a note, never a number.

The groups of an attribute partition the test images, so resample b weighs group g's images by
counts[b] on g's columns: every group reserves its own slots in one `WeightedSums` over all the
test images, with the cell bootstrap's own arithmetic (`bootstrap.add_single_label`,
`add_multilabel`): one product with a row of ones (the groups' values) and one pass over the
counts fill them all. Only what a group row reports is reserved: a balanced-accuracy
task's eight AUROCs, most of a cell's bootstrap, and every group's Brier score and log loss are
left out.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.probe.stats.bootstrap import add_multilabel, add_single_label, in_chunks
from medprobe.probe.stats.calibration import mean_of_finite
from medprobe.probe.stats.weighted_sums import WeightedSums

QUANTILE_BINS = 4  # a numeric column without edges is cut at its quartiles
NOT_DEFINED = "not defined: the group lacks one of the outcomes the metric needs"
NO_IMAGES = "no test images in this group"


@dataclass(frozen=True)
class SubgroupSpec:
    """One `subgroups=` entry: a metadata column, and for a numeric one the bin edges (None:
    quartiles of its test values; for a text column, None: each value is a group)."""

    attribute: str
    edges: tuple[float, ...] | None = None

    @property
    def text(self) -> str:
        if self.edges is None:
            return self.attribute
        return f"{self.attribute}:" + ",".join(f"{e:g}" for e in self.edges)


def parse_subgroups(value: str | Sequence[str] | None) -> tuple[SubgroupSpec, ...]:
    """'sex,age:0,40,60,80' (or a list of such) -> specs; a bare number after `name:` extends
    that column's edges, so edges may be written with the commas every other list uses."""
    if value is None:
        return ()
    texts = [value] if isinstance(value, str) else list(value)
    tokens = [t.strip() for text in texts for t in str(text).split(",") if t.strip()]
    specs: list[tuple[str, list[float] | None]] = []
    for token in tokens:
        attribute, colon, first = token.partition(":")
        if not colon and specs and specs[-1][1] is not None and _is_number(token):
            specs[-1][1].append(float(token))
            continue
        if not attribute or (colon and not _is_number(first)):
            raise ToolkitError(
                f"subgroups={value!r}: {token!r} is not a metadata column or `column:edges` "
                "(e.g. 'sex,age:0,40,60,80')",
                argument="subgroups",
            )
        specs.append((attribute, [float(first)] if colon else None))
    parsed = []
    for attribute, edges in specs:
        if edges is not None and (len(edges) < 2 or any(np.diff(edges) <= 0)):
            raise ToolkitError(
                f"subgroups={value!r}: edges of {attribute!r} {edges} must be at least two "
                "increasing numbers (age:0,40,60,80)",
                argument="subgroups",
            )
        parsed.append(SubgroupSpec(attribute, None if edges is None else tuple(edges)))
    repeated = sorted(
        {s.attribute for s in parsed if [p.attribute for p in parsed].count(s.attribute) > 1}
    )
    if repeated:
        raise ToolkitError(f"subgroups={value!r}: {repeated} named twice", argument="subgroups")
    return tuple(parsed)


def _is_number(text: str) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False


@dataclass(frozen=True)
class Grouping:
    """The groups of one attribute over the test images: codes (N,) int64 into `names`, -1 for
    an image whose value is missing (or outside the edges): it belongs to no group."""

    attribute: str
    names: tuple[str, ...]
    codes: np.ndarray


def make_grouping(spec: SubgroupSpec, values: np.ndarray, where: str) -> Grouping:
    """Groups of the test images by `values` (N,) str ('' missing). A column whose values all
    read as numbers is binned (by `spec.edges`, else quartiles); any other is one group per
    value. Refused: fewer than two groups; quartiles of too few distinct values."""
    values = np.asarray(values, dtype=object).astype(str)
    present = values != ""
    numeric = present.any() and all(_is_number(v) for v in values[present])
    if spec.edges is not None and not numeric:
        raise ToolkitError(
            f"subgroups: {where} column {spec.attribute!r} is not numeric (e.g. "
            f"{values[present][:1].tolist()}), so it takes no edges; write {spec.attribute!r} "
            "alone",
            argument="subgroups",
        )
    codes = np.full(len(values), -1, dtype=np.int64)
    if numeric:
        numbers = np.array([float(v) if v else np.nan for v in values])
        edges = spec.edges
        if edges is None:
            distinct = np.unique(numbers[present])
            quantiles = np.quantile(numbers[present], np.linspace(0, 1, QUANTILE_BINS + 1))
            edges = tuple(np.unique(quantiles))
            if len(distinct) < QUANTILE_BINS or len(edges) < 3:
                raise ToolkitError(
                    f"subgroups: {where} column {spec.attribute!r} has {len(distinct)} distinct "
                    f"value(s), too few for {QUANTILE_BINS} quantile bins; give edges, e.g. "
                    f"{spec.attribute}:{','.join(f'{v:g}' for v in distinct[:3])}",
                    argument="subgroups",
                )
        bins = np.searchsorted(np.asarray(edges), numbers, side="right") - 1
        bins[numbers == edges[-1]] = len(edges) - 2  # the last bin holds its upper edge
        inside = present & (numbers >= edges[0]) & (numbers <= edges[-1])
        codes[inside] = bins[inside]
        names = tuple(
            f"[{low:g}, {high:g}{']' if b == len(edges) - 2 else ')'}"
            for b, (low, high) in enumerate(pairwise(edges))
        )
    else:
        names = tuple(sorted(set(values[present].tolist())))
        index = {name: i for i, name in enumerate(names)}
        codes[present] = [index[v] for v in values[present]]
    if len(np.unique(codes[codes >= 0])) < 2:
        found = [names[c] for c in np.unique(codes[codes >= 0])]
        raise ToolkitError(
            f"subgroups: {where} column {spec.attribute!r} puts the test images in "
            f"{len(found)} group(s) {found}; a comparison needs at least two (other edges?)",
            argument="subgroups",
        )
    return Grouping(spec.attribute, names, codes)


def youden_threshold(positive: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold (predict positive at >= t) maximising TPR - FPR on labelled images
    (the val split); 0.5 when they hold one outcome only."""
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if positive.all() or not positive.any():
        return 0.5
    candidates = np.unique(scores)
    predicted = scores[None, :] >= candidates[:, None]
    tpr = (predicted & positive).sum(1) / positive.sum()
    fpr = (predicted & ~positive).sum(1) / (~positive).sum()
    return float(candidates[int(np.argmax(tpr - fpr))])


@dataclass(frozen=True)
class GroupScores:
    """One probe's numbers for one attribute: per metric, values (G,) per group and (G, B) on
    the resamples (NaN where undefined); `n` (G,) images per group; `notes` per group."""

    attribute: str
    names: tuple[str, ...]
    n: np.ndarray
    values: dict[str, np.ndarray]
    resampled: dict[str, np.ndarray]
    notes: tuple[str, ...]


def _rates(predicted: np.ndarray, outcome: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Share of predicted positives among the images of `outcome`, under each row of weights
    (R, N): TPR when outcome is the positives, FPR when the negatives. NaN without such images."""
    denominator = weights @ outcome.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ (predicted & outcome).astype(np.float64)) / denominator


def group_scores(
    labels: np.ndarray,
    scores: np.ndarray,
    task: dict[str, Any],
    groupings: Sequence[Grouping],
    counts: np.ndarray | None,
    thresholds: np.ndarray | None = None,
) -> list[GroupScores]:
    """Per attribute of `groupings`: the headline metric and ECE per group, and for binary /
    multi-label tasks TPR and FPR at `thresholds` (one per label; a binary task's one applies
    to the positive class).

    labels (N,) int64 or (N, L) int8 with -1 unknown; scores (N, K) probabilities or (N, L);
    counts (B, N) test resamples or None. For multi-label, TPR and FPR are means over labels."""
    headline, multilabel = task["headline_metric"], task["kind"] == "multilabel"
    n_resamples = 0 if counts is None else counts.shape[0]
    metric_names = [headline, "ece"]
    binary = multilabel or scores.shape[1] == 2
    if binary and thresholds is not None:
        metric_names += ["tpr", "fpr"]
    by_attribute = _by_group(labels, scores, task, groupings, counts)
    results = []
    for grouping, drawn in zip(groupings, by_attribute, strict=True):
        n_groups = len(grouping.names)
        values = {m: np.full(n_groups, np.nan) for m in metric_names}
        resampled = {m: np.full((n_groups, n_resamples), np.nan) for m in metric_names}
        for metric, both in drawn.items():
            values[metric], resampled[metric] = both[:, 0], both[:, 1:]
        sizes = np.bincount(grouping.codes[grouping.codes >= 0], minlength=n_groups)
        notes = []
        for g in range(n_groups):
            rows = np.flatnonzero(grouping.codes == g)
            if len(rows) == 0:
                notes.append(NO_IMAGES)
                continue
            if "tpr" in values:
                group_counts = None if counts is None else counts[:, rows]
                rates = _equalized_odds(labels[rows], scores[rows], thresholds, group_counts)
                for name, (value, drawn_rates) in rates.items():
                    values[name][g], resampled[name][g] = value, drawn_rates
            notes.append("" if np.isfinite(values[headline][g]) else NOT_DEFINED)
        results.append(
            GroupScores(grouping.attribute, grouping.names, sizes, values, resampled, tuple(notes))
        )
    return results


class _GroupColumns:
    """`WeightedSums` seen through one group's images: the group's image j is column images[j]
    of the sums, so reservations written for a whole test set (images 0..n-1) reserve the
    group's own slots unchanged."""

    def __init__(self, sums: WeightedSums, images: np.ndarray) -> None:
        self.sums, self.images = sums, images

    def add(
        self,
        images: np.ndarray,
        values: np.ndarray | float = 1.0,
        slots: np.ndarray | None = None,
        n_slots: int = 1,
    ) -> int:
        return self.sums.add(self.images[images], values, slots, n_slots)


def _by_group(
    labels: np.ndarray,
    scores: np.ndarray,
    task: dict[str, Any],
    groupings: Sequence[Grouping],
    counts: np.ndarray | None,
) -> list[dict[str, np.ndarray]]:
    """Per grouping, {headline: (G, 1 + B), "ece": (G, 1 + B)} float64: the group's value (weight
    1 for every image), then on each resample of counts (B, N) (or none); NaN for a group without
    images or where a row leaves the metric undefined. Every attribute's groups share one set of
    sums, so the counts are read once per cell, not once per attribute (the products stream them
    from memory); the row of ones is a product of its own, as joining it to the counts would
    copy them."""
    headline = task["headline_metric"]
    sums = WeightedSums(len(labels))
    readers = []
    for a, grouping in enumerate(groupings):
        for g in range(len(grouping.names)):
            rows = np.flatnonzero(grouping.codes == g)
            if len(rows) == 0:
                continue
            group = _GroupColumns(sums, rows)
            if task["kind"] == "multilabel":  # its one headline, mean_auroc, needs every label
                names, competition = task["label_names"], task.get("competition_labels", ())
                finish = add_multilabel(
                    group, labels[rows], scores[rows], names, competition, calibration=("ece",)
                )
            else:
                finish = add_single_label(
                    group,
                    labels[rows],
                    scores[rows],
                    task["kind"],
                    headline=headline,
                    calibration=("ece",),
                    auroc=headline in ("roc_auc", "macro_auroc"),
                )
            readers.append((a, g, finish))

    def finish_groups(table: np.ndarray) -> dict[tuple[int, str], np.ndarray]:
        """{(attribute, metric): (chunk, G)}: `in_chunks` joins chunks along the first axis."""
        drawn = {
            (a, m): np.full((table.shape[1], len(grouping.names)), np.nan)
            for a, grouping in enumerate(groupings)
            for m in (headline, "ece")
        }
        for a, g, finish in readers:
            values = finish(table)
            for metric in (headline, "ece"):
                if metric in values:
                    drawn[a, metric][:, g] = values[metric]
        return drawn

    once = np.ones((1, len(labels)), dtype=np.int32)
    # a resample may draw none of a small group's images: its metrics are 0/0, NaN
    with np.errstate(invalid="ignore", divide="ignore"):
        parts = [finish_groups(sums.compute(once))]
        if counts is not None:
            parts.append(in_chunks(sums, counts, finish_groups))
    return [
        {m: np.concatenate([part[a, m] for part in parts]).T for m in (headline, "ece")}
        for a in range(len(groupings))
    ]


def _equalized_odds(
    labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, counts: np.ndarray | None
) -> dict[str, tuple[float, np.ndarray]]:
    """{'tpr': (value, (B,)), 'fpr': ...} of one group, means over labels for multi-label."""
    if labels.ndim == 1:  # binary: the positive class's probability
        labels, scores = labels[:, None], scores[:, 1:2]
    once = np.ones((1, len(labels)))
    n_resamples = 0 if counts is None else len(counts)
    rates: dict[str, list[np.ndarray]] = {"tpr": [], "fpr": []}
    for column in range(labels.shape[1]):
        if np.isnan(scores[:, column]).any():  # a label no probe was trained for
            continue
        known = labels[:, column] >= 0
        predicted = scores[:, column] >= thresholds[column]
        for name, value in (("tpr", 1), ("fpr", 0)):
            outcome = known & (labels[:, column] == value)
            drawn = _rates(predicted, outcome, counts) if counts is not None else np.empty(0)
            rates[name].append(np.concatenate([_rates(predicted, outcome, once), drawn]))
    result = {}
    for name, per_label in rates.items():
        both = (
            mean_of_finite(np.stack(per_label), axis=0)
            if per_label
            else np.full(1 + n_resamples, np.nan)
        )
        result[name] = (float(both[0]), both[1:])
    return result


def spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gap, worst) over groups, axis 0 of `values` (G, ...): max - min and min over the groups
    where the metric is defined; NaN with fewer than two such groups."""
    values = np.asarray(values, dtype=np.float64)
    defined = np.isfinite(values)
    enough = defined.sum(0) >= 2
    with np.errstate(invalid="ignore"):
        high = np.where(defined, values, -np.inf).max(0)
        low = np.where(defined, values, np.inf).min(0)
    gap = np.where(enough, high - low, np.nan)
    worst = np.where(enough, low, np.nan)
    return gap, worst
