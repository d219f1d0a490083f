"""The report's tables, shared by the Markdown report and the terminal: headline cells with
their intervals, every metric per entry, and the natural orders of entries and budgets."""

import math
import re
from typing import Any, Protocol

import pandas as pd

from medprobe.probe.budgets import KIND_ORDER
from medprobe.probe.stats.paired import entry_name


class RunTables(Protocol):
    """What a report reads of a probe run (`medprobe.probe.run.results.Results` is one): the
    tables `Results.save` writes, so a report can be rebuilt from a results folder."""

    frame: pd.DataFrame
    summary_table: pd.DataFrame
    paired_table: pd.DataFrame
    calibration: pd.DataFrame
    run: dict[str, Any]


def natural_key(text: str) -> list[Any]:
    """Sort key that puts m2 before m10 (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def budget_order(frame: pd.DataFrame) -> list[str]:
    budgets = frame[["budget", "budget_kind", "budget_value"]].drop_duplicates()
    budgets = budgets.assign(order=budgets["budget_kind"].map(KIND_ORDER))
    return budgets.sort_values(["order", "budget_value"])["budget"].tolist()


def _cell(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(low):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _compact_cell(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f}" if math.isnan(low) else f"{mean:.3f} ± {(high - low) / 2:.3f}"


def headline_table(
    summary: pd.DataFrame,
    metric: str,
    *,
    compact: bool = False,
    columns: tuple[str, str] = ("ci_low", "ci_high"),
) -> pd.DataFrame:
    """Rows (entry, method), columns budgets: 'mean [95% interval]' of the headline metric
    ('mean ± half-width' when `compact`, for terminals); `columns` name the interval's bounds."""
    table = summary[summary["metric"] == metric].copy()
    table["entry"] = entry_name(table)
    format_cell = _compact_cell if compact else _cell
    low, high = columns
    table["cell"] = [
        format_cell(m, lo, hi)
        for m, lo, hi in zip(table["mean"], table[low], table[high], strict=True)
    ]
    pivot = table.pivot_table(
        index=["entry", "method"], columns="budget", values="cell", aggfunc="first"
    )
    return pivot[[b for b in budget_order(table) if b in pivot.columns]]


def metrics_table(summary: pd.DataFrame, headline: str) -> pd.DataFrame:
    """Rows (entry, method, budget), columns every scalar metric (headline first, per-label
    AUROCs left to summary.csv): the mean over seeds."""
    table = summary[~summary["metric"].str.startswith("auroc[")].copy()
    table["entry"] = entry_name(table)
    metrics = list(dict.fromkeys([headline, *table["metric"]]))
    pivot = table.pivot_table(
        index=["entry", "method", "budget"], columns="metric", values="mean", aggfunc="first"
    )
    budgets = budget_order(table)
    pivot = pivot.reset_index()
    pivot["budget"] = pd.Categorical(pivot["budget"], categories=budgets, ordered=True)
    pivot = pivot.sort_values(["entry", "method", "budget"])
    return pivot[["entry", "method", "budget", *[m for m in metrics if m in pivot.columns]]]
