"""The report's tables, shared by the Markdown report and the terminal: headline cells with
their intervals, every metric per entry, and the natural orders of entries and budgets."""

import math
import re
from typing import Any, Protocol

import pandas as pd

from medprobe.probe.budgets import KIND_ORDER
from medprobe.probe.stats.paired import (
    DEGENERATE_INTERVAL,
    FEW_SEEDS_NO_INTERVAL,
    FEW_SEEDS_TEST_INTERVAL,
    MIN_SEEDS_FOR_T,
    SEEDS_EQUAL_INTERVAL,
    SEEDS_INTERVAL,
    entry_name,
)


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


# What a cell's text means, printed under every table that holds such cells (terminal,
# report.md, report.html): the words match summary.csv's `interval` column.
CELL_KEY = (
    "mean [95% interval]: over seeds (Student t) at sampled budgets, over test resamples "
    "(percentile bootstrap) at full budgets; * over seeds and test resamples together, where "
    f"fewer than {MIN_SEEDS_FOR_T} seeds leave no t interval; 'too few seeds': fewer than "
    f"{MIN_SEEDS_FOR_T} seeds and no bootstrap; 'bootstrap degenerate': every test resample "
    "scored the same, which shows a small or easy test set, not certainty ('all seeds equal' "
    "likewise)"
)


def interval_cell(mean: float, low: float, high: float, interval: str) -> str:
    """The one text of a value with its interval, for the terminal, report.md, report.html and
    summary.csv's `shown`: `interval` is summary.csv's word for its kind."""
    if math.isnan(mean):
        return "—"
    if interval == DEGENERATE_INTERVAL:
        return f"{mean:.3f} (bootstrap degenerate)"
    if interval == SEEDS_EQUAL_INTERVAL:
        return f"{mean:.3f} (all seeds equal)"
    if interval == FEW_SEEDS_NO_INTERVAL:
        return f"{mean:.3f} (too few seeds)"
    if math.isnan(low) or math.isnan(high):
        return f"{mean:.3f} (no interval)"
    if interval == SEEDS_INTERVAL and low == high:  # a summary.csv from before the word existed
        return f"{mean:.3f} (all seeds equal)"
    mark = "*" if interval == FEW_SEEDS_TEST_INTERVAL else ""
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]{mark}"


def shown_cells(summary: pd.DataFrame, columns: tuple[str, str] = ("ci_low", "ci_high")) -> list:
    """`interval_cell` of every summary row; `columns` other than ci_low/ci_high name the
    seeds-and-test bounds, whose kind is the same in every row."""
    low, high = columns
    kinds = summary["interval"] if columns == ("ci_low", "ci_high") else [""] * len(summary)
    return [
        interval_cell(m, lo, hi, kind)
        for m, lo, hi, kind in zip(summary["mean"], summary[low], summary[high], kinds, strict=True)
    ]


def headline_table(
    summary: pd.DataFrame,
    metric: str,
    *,
    columns: tuple[str, str] = ("ci_low", "ci_high"),
) -> pd.DataFrame:
    """Rows (entry, method), columns budgets: 'mean [95% interval]' of the headline metric in
    `interval_cell`'s words; `columns` name the interval's bounds."""
    table = summary[summary["metric"] == metric].copy()
    table["entry"] = entry_name(table)
    table["cell"] = shown_cells(table, columns)
    pivot = table.pivot_table(
        index=["entry", "method"], columns="budget", values="cell", aggfunc="first"
    )
    pivot = pivot.reindex(sorted(pivot.index, key=lambda pair: (natural_key(pair[0]), pair[1])))
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
