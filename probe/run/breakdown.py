"""A run's subgroup breakdown (`subgroups=`): the test images' groups read from each store's
metadata and checked before any probe is fit, each probe's per-group numbers, and the tidy
subgroups table with its intervals and the paired comparison of gaps between entries.

subgroups.csv, one row per (dataset, model, pooling, method, budget, attribute, group, metric):
`n` test images in the group, `value` (mean over seeds), `low`/`high` (95 % interval over the
test resamples and the seeds, as summary.csv's `ci_seeds_and_test_*`), `note` (why a value is
missing). Per group: the headline metric, `ece`, and for binary and multi-label tasks `tpr` and
`fpr` at the threshold chosen on val (Youden's J; 0.5 without a val split). Over the groups
(group ''): `<headline>_gap` (best minus worst group), `<headline>_worst`, `ece_gap`, `tpr_gap`,
`fpr_gap`, `equalized_odds` (the larger of the two rate gaps); and `<headline>_gap_vs_winner`
with group = the entry that wins the cell overall: this entry's gap minus the winner's, paired
on the same resamples and seeds (below zero: this entry's gap is smaller).
"""

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from medprobe.cache import Store, ToolkitError, open_store
from medprobe.cache.layout.schema import STUDY_COLUMN
from medprobe.probe.stats.bootstrap import paired_difference, seeds_and_resamples_interval
from medprobe.probe.stats.calibration import mean_of_finite
from medprobe.probe.stats.paired import headline_of
from medprobe.probe.stats.subgroups import (
    Grouping,
    GroupScores,
    group_scores,
    make_grouping,
    parse_subgroups,
    spread,
    youden_threshold,
)
from medprobe.probe.stats.units import Units, make_units

COLUMNS = [
    "dataset",
    "model",
    "pooling",
    "method",
    "budget",
    "attribute",
    "group",
    "n",
    "metric",
    "value",
    "low",
    "high",
    "note",
]


def units_of(store: Store, aggregate: str | None) -> Units | None:
    """The test split's units under `aggregate` ('study:mean', 'patient:max', ...), or None.
    Refused when the store records no such unit."""
    if aggregate is None:
        return None
    unit, pool = aggregate.split(":")
    if unit == "patient":
        unit_of = store.groups("test")
    else:
        unit_of = store.metadata("test").get(STUDY_COLUMN)
    if unit_of is None or not any(unit_of):
        recorded = "patient or lesion ids" if unit == "patient" else f"a {STUDY_COLUMN!r} column"
        other = "patient" if unit == "study" and store.groups("test") is not None else None
        raise ToolkitError(
            f"aggregate={aggregate!r}: dataset {store.dataset_name!r} records no {unit} per "
            f"image ({store.path.name} has no {recorded}); "
            + (f"use aggregate={other!r}, or " if other else "")
            + "leave aggregate out to score images",
            argument="aggregate",
        )
    return make_units(store.ids("test"), unit_of, pool)


def groupings_of(
    store: Store, subgroups: Sequence[str], units: Units | None = None
) -> list[Grouping]:
    """The groups of `store`'s test images (or units: a value where the unit's images agree)
    for each `subgroups` entry ([] for none); an unknown column is refused naming the columns
    the store has."""
    specs = parse_subgroups(subgroups)
    if not specs:
        return []
    metadata = store.metadata("test")
    if units is not None:
        metadata = {column: units.collapse(values) for column, values in metadata.items()}
    where = f"dataset {store.dataset_name!r}"
    groupings = []
    for spec in specs:
        if spec.attribute not in metadata:
            has = ", ".join(metadata) or "none (extract again, or `cache annotate`)"
            raise ToolkitError(
                f"subgroups: {where} has no metadata column {spec.attribute!r}; "
                f"{store.path.name} has: {has}",
                argument="subgroups",
            )
        groupings.append(make_grouping(spec, metadata[spec.attribute], where))
    return groupings


def check_breakdowns(paths: Sequence[Any], subgroups: Sequence[str], aggregate: str | None) -> None:
    """Build every dataset's units and groupings once (first store per dataset) so a bad column
    or a missing study fails before any probe is fit."""
    for path in paths:
        store = open_store(path)
        groupings_of(store, subgroups, units_of(store, aggregate))


def needs_val_scores(task: dict[str, Any], groupings: list[Grouping], has_val: bool) -> bool:
    """Whether probes also score the val split: for the thresholds of TPR and FPR."""
    return bool(groupings) and has_val and task["kind"] in ("binary", "multilabel")


def thresholds_on_val(
    task: dict[str, Any], val_labels: np.ndarray | None, val_scores: np.ndarray | None
) -> np.ndarray:
    """One threshold per label (binary: one for the positive class), Youden's J on val."""
    if task["kind"] == "multilabel":
        n_labels = len(task["label_names"])
        if val_scores is None or val_labels is None:
            return np.full(n_labels, 0.5)
        return np.array(
            [
                youden_threshold(
                    val_labels[val_labels[:, j] >= 0, j] == 1,
                    val_scores[val_labels[:, j] >= 0, j],
                )
                if np.isfinite(val_scores[:, j]).all()
                else 0.5
                for j in range(val_labels.shape[1])
            ]
        )
    if val_scores is None or val_labels is None:
        return np.array([0.5])
    return np.array([youden_threshold(val_labels == 1, val_scores[:, 1])])


def subgroup_cell(
    labels: np.ndarray,
    scores: np.ndarray,
    task: dict[str, Any],
    groupings: list[Grouping],
    counts: np.ndarray | None,
    thresholds: np.ndarray | None,
) -> list[GroupScores]:
    """One probe's numbers for each attribute."""
    binary = task["kind"] in ("binary", "multilabel")
    return group_scores(labels, scores, task, groupings, counts, thresholds if binary else None)


def _interval(values: np.ndarray, resampled: np.ndarray) -> tuple[float, float, float]:
    """(mean over seeds, low, high): values (S,), resampled (S, B)."""
    value = float(mean_of_finite(values[None, :], axis=1)[0])
    if resampled.shape[1] == 0 or not np.isfinite(resampled).any():
        return value, float("nan"), float("nan")
    low, high = seeds_and_resamples_interval(resampled)
    return value, low, high


# (dataset, model, pooling, method, budget, attribute) -> per seed GroupScores
SubgroupCells = dict[tuple[str, str, str, str, str, str], list[GroupScores]]


def _overall(per_seed: list[GroupScores], metric: str) -> dict[str, tuple[np.ndarray, ...]]:
    """Gap (and worst) per seed (S,) and per seed and resample (S, B) of `metric`."""
    values = np.stack([s.values[metric] for s in per_seed])  # (S, G)
    drawn = np.stack([s.resampled[metric] for s in per_seed])  # (S, G, B)
    gap, worst = spread(values.T)
    gap_drawn, worst_drawn = spread(np.moveaxis(drawn, 1, 0))
    return {"gap": (gap, gap_drawn), "worst": (worst, worst_drawn)}


def subgroup_table(
    cells: SubgroupCells, summary: pd.DataFrame, tasks: dict[str, dict[str, Any]]
) -> pd.DataFrame:
    """subgroups.csv (see the module docstring) from every probe's per-seed group numbers."""
    rows: list[dict[str, Any]] = []
    gaps: dict[tuple, dict[str, np.ndarray]] = defaultdict(dict)
    for key, per_seed in cells.items():
        dataset, model, pooling, method, budget, attribute = key
        headline = headline_of(tasks[dataset], summary[summary["dataset"] == dataset])
        first = per_seed[0]

        def add(
            group: str, n: int, metric: str, triple: tuple, note: str = "", key: tuple = key
        ) -> None:
            value, low, high = triple
            defined = np.isfinite(value)
            rows.append(
                dict(zip(COLUMNS, (*key, group, n, metric), strict=False))
                | {
                    "value": value if defined else np.nan,
                    "low": low if defined else np.nan,
                    "high": high if defined else np.nan,
                    "note": note if not defined else "",
                }
            )

        for g, name in enumerate(first.names):
            for metric in first.values:
                values = np.array([s.values[metric][g] for s in per_seed])
                drawn = np.stack([s.resampled[metric][g] for s in per_seed])
                note = first.notes[g] or "not defined in this group"
                add(name, int(first.n[g]), metric, _interval(values, drawn), note)
        n_total = int(first.n.sum())
        few = "fewer than two groups where it is defined"
        rate_gaps = {}
        for metric in first.values:
            overall = _overall(per_seed, metric)
            add("", n_total, f"{metric}_gap", _interval(*overall["gap"]), few)
            if metric == headline:
                add("", n_total, f"{metric}_worst", _interval(*overall["worst"]), few)
                gaps[(dataset, method, budget, attribute)][f"{model}:{pooling}"] = overall["gap"]
            if metric in ("tpr", "fpr"):
                rate_gaps[metric] = overall["gap"]
        if rate_gaps:
            (tpr, tpr_drawn), (fpr, fpr_drawn) = rate_gaps["tpr"], rate_gaps["fpr"]
            odds = (np.fmax(tpr, fpr), np.fmax(tpr_drawn, fpr_drawn))
            add("", n_total, "equalized_odds", _interval(*odds), few)
    rows += _gap_comparisons(gaps, summary, tasks)
    return pd.DataFrame(rows, columns=COLUMNS)


def _gap_comparisons(
    gaps: dict[tuple, dict[str, tuple[np.ndarray, np.ndarray]]],
    summary: pd.DataFrame,
    tasks: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each entry's headline gap minus the overall winner's, on the same seeds and resamples."""
    rows = []
    for (dataset, method, budget, attribute), by_entry in gaps.items():
        part = summary[summary["dataset"] == dataset]
        headline = headline_of(tasks[dataset], part)
        cell = part[(part["method"] == method) & (part["budget"] == budget)]
        cell = cell[cell["metric"] == headline]
        if cell.empty or len(by_entry) < 2:
            continue
        best = cell.loc[cell["mean"].idxmax()]
        winner = f"{best['model']}:{best['pooling']}"
        if winner not in by_entry:
            continue
        winner_gap, winner_drawn = by_entry[winner]
        for entry, (gap, drawn) in by_entry.items():
            if entry == winner:
                continue
            model, pooling = entry.rsplit(":", 1)
            value = float(mean_of_finite((gap - winner_gap)[None, :], axis=1)[0])
            per_resample = mean_of_finite(drawn - winner_drawn, axis=0)  # mean over seeds
            _, low, high, _ = paired_difference(per_resample, np.zeros_like(per_resample))
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "pooling": pooling,
                    "method": method,
                    "budget": budget,
                    "attribute": attribute,
                    "group": winner,
                    "n": np.nan,
                    "metric": f"{headline}_gap_vs_winner",
                    "value": value,
                    "low": low,
                    "high": high,
                    "note": "" if np.isfinite(value) else "a gap is not defined",
                }
            )
    return rows
