"""Summaries and paired comparisons of a probe run.

Two sources of uncertainty are reported. Over seeds: each few-shot budget draws several support
sets, and the Student-t interval of the mean over them is the spread a new draw would show.
Over test images: each probe is also scored on B bootstrap resamples of the test set (whole
patients where the store has groups), the same resamples for every entry, which is the only
interval a full budget (one fit) can have, and the one that matters on small medical test sets.
"""

import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from medprobe.probe.stats.bootstrap import (
    image_clusters,
    paired_difference,
    percentile_interval,
    seeds_and_resamples_interval,
)
from medprobe.probe.stats.delong import delong_paired
from medprobe.probe.stats.predictions import DatasetPredictions

logger = logging.getLogger(__name__)

KEYS = ["dataset", "model", "pooling", "method", "budget", "budget_kind", "budget_value"]
# (dataset, model, pooling, method, budget, seed) -> metric -> (B,) values on the test resamples
Resampled = dict[tuple[str, str, str, str, str, int], dict[str, np.ndarray]]

SEEDS_INTERVAL = "seeds (Student t)"
TEST_INTERVAL = "test bootstrap (percentile)"
NO_INTERVAL = "none (one fit, no bootstrap)"
INTERVAL_NOTES = (
    f"**{SEEDS_INTERVAL}** (few-shot and fraction budgets, `ci_low`/`ci_high`): the 95% "
    "Student-t interval of the mean over support-set seeds; it says how much the score moves "
    "with the labelled images drawn, on this test set. "
    f"**{TEST_INTERVAL}** (full budgets, `ci_low`/`ci_high`): the 2.5th to 97.5th percentile of "
    "the metric over B bootstrap resamples of the test images (whole patients together where the "
    "dataset records them); it says how much the score would move on another test sample of "
    "this size. **Seeds and test together** (`ci_seeds_and_test_low`/`_high`, every budget): the "
    "2.5th to 97.5th percentile, over the B test resamples, of the mean score over a resample of "
    "the seeds. Every entry is scored on the same resamples and support sets, so differences "
    "are paired."
)


def entry_name(frame: pd.DataFrame) -> pd.Series:
    """'model:pooling', the unit being compared (a model read at two poolings is two entries)."""
    return frame["model"] + ":" + frame["pooling"]


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean over seeds; NaN bounds for one value."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, mean - half, mean + half


def _resampled_by_seed(
    resampled: Resampled | None, cell: dict, seeds: np.ndarray, metric: str
) -> np.ndarray | None:
    """(S, B) values of one metric of one cell on the test resamples, or None without them."""
    if not resampled:
        return None
    rows = []
    for seed in seeds:
        key = (
            cell["dataset"],
            cell["model"],
            cell["pooling"],
            cell["method"],
            cell["budget"],
            int(seed),
        )
        values = resampled.get(key, {}).get(metric)
        if values is None:
            return None
        rows.append(values)
    return np.stack(rows)


def summarise(results: pd.DataFrame, resampled: Resampled | None = None) -> pd.DataFrame:
    """One row per (dataset, model, pooling, method, budget, metric): n_seeds, mean, the 95 %
    interval `ci_low`/`ci_high` (over seeds for sampled budgets, over test resamples for full
    ones; `interval` says which) and `ci_seeds_and_test_low`/`_high` (both together)."""
    rows = []
    for key, group in results.groupby([*KEYS, "metric"], sort=False):
        cell = dict(zip([*KEYS, "metric"], key, strict=True))
        mean, low, high = t_interval(group["value"].to_numpy())
        interval = SEEDS_INTERVAL if len(group) > 1 else NO_INTERVAL
        both = (float("nan"), float("nan"))
        draws = _resampled_by_seed(resampled, cell, group["seed"].to_numpy(), cell["metric"])
        if draws is not None:
            both = seeds_and_resamples_interval(draws)
            if cell["budget_kind"] == "full":
                low, high = percentile_interval(draws[0])
                interval = TEST_INTERVAL
        rows.append(
            {
                **cell,
                "n_seeds": len(group),
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
                "interval": interval,
                "ci_seeds_and_test_low": both[0],
                "ci_seeds_and_test_high": both[1],
            }
        )
    return pd.DataFrame(rows)


def ranking(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Entries ranked by their mean rank on `metric` across every (method, budget) cell."""
    table = summary[summary["metric"] == metric].copy()
    table["entry"] = entry_name(table)
    table["rank"] = table.groupby(["method", "budget"])["mean"].rank(ascending=False)
    ranked = (
        table.groupby("entry")
        .agg(mean_rank=("rank", "mean"), best=("mean", "max"), cells=("rank", "size"))
        .reset_index()
    )
    return ranked.sort_values(["mean_rank", "best"], ascending=[True, False])


def paired_differences(
    results: pd.DataFrame,
    metric: str,
    resampled: Resampled | None = None,
    test_scores: DatasetPredictions | None = None,
) -> pd.DataFrame:
    """Per (method, budget) of one dataset: each entry minus the best entry on `metric`.

    Sampled budgets are paired over seeds (same support sets): 95 % t-interval of the mean
    difference and a two-sided Wilcoxon signed-rank p-value. Full budgets are paired over the
    test resamples (same resampled images): the difference on the whole test set, the
    percentile interval of the resampled differences and the bootstrap p-value; for `roc_auc`
    also DeLong's paired test from the saved scores (`test_scores`), clustered by patient or
    lesion (Obuchowski 1997) where the dataset records them."""
    table = results[results["metric"] == metric].copy()
    table["entry"] = entry_name(table)
    rows = []
    for (method, budget), cell in table.groupby(["method", "budget"], sort=False):
        by_seed = cell.pivot_table(index="seed", columns="entry", values="value")
        best = by_seed.mean().idxmax()
        full = (cell["budget_kind"] == "full").all()
        for entry in by_seed.columns:
            if entry == best:
                continue
            row = {"method": method, "budget": budget, "entry": entry, "best": best}
            if full:
                row.update(_full_budget_difference(cell, entry, best, metric, resampled))
                if metric == "roc_auc" and test_scores is not None:
                    row["p_delong"] = _delong(test_scores, cell, entry, best, method)
            else:
                row.update(_seed_difference(by_seed[entry] - by_seed[best]))
            rows.append(row)
    return pd.DataFrame(rows)


def _seed_difference(differences: pd.Series) -> dict:
    difference = differences.dropna().to_numpy()
    mean, low, high = t_interval(difference)
    p_value = float("nan")
    if len(difference) >= 2:
        p_value = 1.0 if np.allclose(difference, 0) else float(stats.wilcoxon(difference).pvalue)
    return {
        "difference": mean,
        "ci_low": low,
        "ci_high": high,
        "p_value": p_value,
        "test": "Wilcoxon signed-rank over seeds",
        "n": len(difference),
    }


def _full_budget_difference(
    cell: pd.DataFrame, entry: str, best: str, metric: str, resampled: Resampled | None
) -> dict:
    values = cell.set_index("entry")["value"]
    point = float(values[entry] - values[best])
    draws = {}
    for name in (entry, best):
        row = cell[cell["entry"] == name].iloc[0]
        draws[name] = _resampled_by_seed(resampled, row.to_dict(), np.array([row["seed"]]), metric)
    if draws[entry] is None or draws[best] is None:
        nan = float("nan")
        return {
            "difference": point,
            "ci_low": nan,
            "ci_high": nan,
            "p_value": nan,
            "test": NO_INTERVAL,
            "n": 1,
        }
    _, low, high, p_value = paired_difference(draws[entry][0], draws[best][0])
    return {
        "difference": point,
        "ci_low": low,
        "ci_high": high,
        "p_value": p_value,
        "test": "paired test bootstrap",
        "n": draws[entry].shape[1],
    }


def _delong(
    test_scores: DatasetPredictions, cell: pd.DataFrame, entry: str, best: str, method: str
) -> float:
    """DeLong's two-sided p-value for AUROC(entry) = AUROC(best), on the full test set (images
    of one patient or lesion as one cluster where the dataset records them)."""
    positives = np.asarray(test_scores.labels) == 1
    columns = []
    for name in (entry, best):
        row = cell[cell["entry"] == name].iloc[0]
        key = (row["model"], row["pooling"], method, row["budget"], int(row["seed"]))
        scores = test_scores.scores.get(key)
        if scores is None or scores.shape[1] != 2:
            return float("nan")
        columns.append(scores[:, 1])
    return float(
        delong_paired(
            positives,
            columns[0],
            columns[1],
            groups=image_clusters(test_scores.groups, test_scores.ids),
        ).p_value
    )


def headline_of(task: dict[str, Any], summary: pd.DataFrame) -> str:
    """The task's headline metric, or the first metric the results hold if they lack it (a store
    whose task names a metric its labels cannot give, e.g. roc_auc with no test positives)."""
    wanted = task.get("headline_metric", "accuracy")
    present = list(dict.fromkeys(summary["metric"]))
    if wanted in present or not present:
        return wanted
    logger.warning("headline metric %r not in the results; leading with %r", wanted, present[0])
    return present[0]
