"""Summaries over seeds: means with 95% intervals, rankings, and paired differences to the best."""

import numpy as np
import pandas as pd
from scipy import stats

KEYS = ["dataset", "model", "pooling", "method", "budget", "budget_kind", "budget_value"]


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


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, pooling, method, budget, metric): n, mean, ci_low, ci_high."""
    rows = []
    for key, group in results.groupby([*KEYS, "metric"], sort=False):
        mean, low, high = t_interval(group["value"].to_numpy())
        rows.append(
            {
                **dict(zip([*KEYS, "metric"], key, strict=True)),
                "n_seeds": len(group),
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
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


def paired_differences(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (method, budget): each entry minus the best entry, paired over the same seeds
    (same support sets), with a 95% t-interval and a two-sided Wilcoxon signed-rank p-value."""
    table = results[results["metric"] == metric].copy()
    table["entry"] = entry_name(table)
    rows = []
    for (method, budget), cell in table.groupby(["method", "budget"], sort=False):
        by_seed = cell.pivot_table(index="seed", columns="entry", values="value")
        best = by_seed.mean().idxmax()
        for entry in by_seed.columns:
            if entry == best:
                continue
            difference = (by_seed[entry] - by_seed[best]).dropna().to_numpy()
            mean, low, high = t_interval(difference)
            p_value = float("nan")
            if len(difference) >= 2:
                p_value = (
                    1.0 if np.allclose(difference, 0) else float(stats.wilcoxon(difference).pvalue)
                )
            rows.append(
                {
                    "method": method,
                    "budget": budget,
                    "entry": entry,
                    "best": best,
                    "difference": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "p_wilcoxon": p_value,
                    "n_seeds": len(difference),
                }
            )
    return pd.DataFrame(rows)
