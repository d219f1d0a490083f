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
FEW_SEEDS_TEST_INTERVAL = "seeds and test bootstrap (percentile): too few seeds for a t interval"
FEW_SEEDS_NO_INTERVAL = "none: too few seeds for a t interval and no test bootstrap"
DEGENERATE_INTERVAL = "test bootstrap degenerate: every resample scored the same"
SEEDS_EQUAL_INTERVAL = "seeds all equal: every seed scored the same"
NO_INTERVAL = "none (one fit, no bootstrap)"
# A Student-t interval from two seeds has 1 degree of freedom (t = 12.7): it says nothing a
# reader can use, and its bounds leave the metric's range. Below this many seeds none is shown.
MIN_SEEDS_FOR_T = 3
RETRIEVAL_HEADLINE = "map@r"  # what retrieval toolkits lead with (THUNDER, Patho-Bench report mAP)
T_TEST = "paired t-test over seeds"
WILCOXON_TEST = "Wilcoxon signed-rank over seeds"
BOOTSTRAP_TEST = "paired test bootstrap"
SIGNIFICANCE = 0.05
INTERVAL_NOTES = (
    f"**{SEEDS_INTERVAL}** (few-shot and fraction budgets with at least {MIN_SEEDS_FOR_T} "
    "seeds, `ci_low`/`ci_high`): the 95% Student-t interval of the mean over support-set seeds; "
    "it says how much the score moves with the labelled images drawn, on this test set. "
    f"**{TEST_INTERVAL}** (full budgets): the 2.5th to 97.5th percentile of the metric over B "
    "bootstrap resamples of the test images (whole patients together where the dataset records "
    "them); it says how much the score would move on another test sample of this size. Where "
    "every resample scores the same (e.g. 1.000 on a small, easy test set) the cell says "
    "*bootstrap degenerate*: the test set is too small or too easy to show any spread, which is "
    "not certainty; where every seed scores the same the cell says *all seeds equal*, for the "
    "same reason. **Seeds and test together** (`ci_seeds_and_test_low`/`_high`, every budget; "
    f"marked * where it stands in for a t interval because fewer than {MIN_SEEDS_FOR_T} seeds "
    "were run): the 2.5th to 97.5th percentile, over the B test resamples, of the mean score "
    "over a resample of the seeds. Every bound is clipped to the metric's range (accuracy, "
    "AUROC, F1 in [0, 1], kappa in [-1, 1], ECE, Brier, log loss at least 0). Every entry is "
    "scored on the same resamples and support sets, so differences are paired: over seeds by "
    "the paired t-test (which, unlike a Wilcoxon signed-rank test, can reach p < 0.05 with 3 to "
    "5 seeds), over test resamples by the paired bootstrap (whose smallest p is 2/(B+1); "
    "`can_reach_0.05` says whether a row's test could reach significance at all)."
)


# paired.csv's columns, written even when no row has a partner (one model: a header only)
PAIRED_COLUMNS = [
    "method",
    "budget",
    "entry",
    "best",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "test",
    "n",
    "can_reach_0.05",
    "p_delong",
]


def metric_range(metric: str) -> tuple[float, float]:
    """The values `metric` can take: bounds clip intervals that a normal approximation would
    push past them (a t interval of accuracies near 1 reaching 1.08)."""
    if metric == "quadratic_kappa":
        return -1.0, 1.0
    if metric == "log_loss":
        return 0.0, float("inf")
    if metric == "brier":
        return 0.0, 2.0  # summed squared error to a one-hot label
    return 0.0, 1.0  # accuracies, F1, AUROCs (also auroc[label]), ECE


def clip_to_range(metric: str, low: float, high: float) -> tuple[float, float]:
    """(low, high) clipped to `metric_range(metric)`; NaN stays NaN."""
    floor, ceiling = metric_range(metric)
    return float(np.clip(low, floor, ceiling)), float(np.clip(high, floor, ceiling))


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
    interval `ci_low`/`ci_high` and `interval`, the words that say which it is (see
    `INTERVAL_NOTES`), and `ci_seeds_and_test_low`/`_high` (both together). Bounds are clipped
    to the metric's range; fewer than `MIN_SEEDS_FOR_T` seeds give no t interval."""
    rows = []
    for key, group in results.groupby([*KEYS, "metric"], sort=False):
        cell = dict(zip([*KEYS, "metric"], key, strict=True))
        values = group["value"].to_numpy()
        mean, low, high = t_interval(values)
        n_seeds = int((~np.isnan(values.astype(float))).sum())
        interval = SEEDS_INTERVAL if low != high else SEEDS_EQUAL_INTERVAL
        if n_seeds < MIN_SEEDS_FOR_T:
            low = high = float("nan")
            interval = FEW_SEEDS_NO_INTERVAL if n_seeds > 1 else NO_INTERVAL
        both = (float("nan"), float("nan"))
        draws = _resampled_by_seed(resampled, cell, group["seed"].to_numpy(), cell["metric"])
        if draws is not None:
            both = seeds_and_resamples_interval(draws)
            if cell["budget_kind"] == "full":
                low, high = percentile_interval(draws[0])
                finite = draws[0][np.isfinite(draws[0])]
                degenerate = len(finite) > 0 and np.all(finite == finite[0])
                interval = DEGENERATE_INTERVAL if degenerate else TEST_INTERVAL
            elif n_seeds < MIN_SEEDS_FOR_T:
                low, high = both
                interval = FEW_SEEDS_TEST_INTERVAL
        low, high = clip_to_range(cell["metric"], low, high)
        rows.append(
            {
                **cell,
                "n_seeds": len(group),
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
                "interval": interval,
                "ci_seeds_and_test_low": clip_to_range(cell["metric"], *both)[0],
                "ci_seeds_and_test_high": clip_to_range(cell["metric"], *both)[1],
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
    difference and the paired t-test's two-sided p-value. Full budgets are paired over the
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
            floor, ceiling = metric_range(metric)
            span = ceiling - floor  # a difference of two values in range lies within +-span
            row["ci_low"], row["ci_high"] = np.clip([row["ci_low"], row["ci_high"]], -span, span)
            rows.append(row)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def smallest_p_value(test: str, n: int) -> float:
    """The smallest two-sided p-value `test` can give with `n` seeds or resamples, whatever the
    data: with 5 seeds the exact Wilcoxon signed-rank test cannot go below 2/2^5 = 0.0625, so
    it can never call a lead significant; the paired t-test can (it tends to 0 as the
    differences agree); the paired bootstrap stops at 2/(B+1)."""
    if test == WILCOXON_TEST:
        return 2.0 / 2.0**n if n >= 1 else 1.0
    if test == BOOTSTRAP_TEST:
        return min(1.0, 2.0 / (n + 1))
    if test == T_TEST:
        return 0.0 if n >= 2 else 1.0
    return float("nan")


def _seed_difference(differences: pd.Series) -> dict:
    """Paired over seeds (same support sets): the t interval of the mean difference and the
    paired t-test's p, the test that agrees with that interval and can reach 0.05 from 2 seeds
    on (a Wilcoxon signed-rank test needs at least 6)."""
    difference = differences.dropna().to_numpy()
    mean, low, high = t_interval(difference)
    if len(difference) < MIN_SEEDS_FOR_T:
        low = high = float("nan")
    p_value = float("nan")
    if len(difference) >= 2:
        if np.allclose(difference, difference[0]):  # no spread: t is 0/0 or x/0
            p_value = 1.0 if np.isclose(difference[0], 0) else 0.0
        else:
            p_value = float(stats.ttest_1samp(difference, 0.0).pvalue)
    return {
        "difference": mean,
        "ci_low": low,
        "ci_high": high,
        "p_value": p_value,
        "test": T_TEST,
        "n": len(difference),
        "can_reach_0.05": smallest_p_value(T_TEST, len(difference)) < SIGNIFICANCE,
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
            "can_reach_0.05": False,
        }
    _, low, high, p_value = paired_difference(draws[entry][0], draws[best][0])
    return {
        "difference": point,
        "ci_low": low,
        "ci_high": high,
        "p_value": p_value,
        "test": BOOTSTRAP_TEST,
        "n": draws[entry].shape[1],
        "can_reach_0.05": smallest_p_value(BOOTSTRAP_TEST, draws[entry].shape[1]) < SIGNIFICANCE,
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
    """The task's headline metric; mAP@R for a run of retrieval alone (its own headline, not a
    missing one); or the first metric the results hold if they lack it, with a warning (a store
    whose task names a metric its labels cannot give, e.g. roc_auc with no test positives)."""
    wanted = task.get("headline_metric", "accuracy")
    present = list(dict.fromkeys(summary["metric"]))
    if wanted in present or not present:
        return wanted
    if set(summary["method"]) == {"retrieval"} and RETRIEVAL_HEADLINE in present:
        return RETRIEVAL_HEADLINE
    logger.warning("headline metric %r not in the results; leading with %r", wanted, present[0])
    return present[0]
