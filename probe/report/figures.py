"""The report's figures: label efficiency against budget and reliability diagrams, one style
(colour and marker per entry, natural order, legend outside the panels) for both."""

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medprobe.cache.files.atomic import write_atomically
from medprobe.probe.budgets import KIND_ORDER
from medprobe.probe.report.tables import budget_order, natural_key
from medprobe.probe.stats.paired import entry_name

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn: `import probe` stays light
    from matplotlib.figure import Figure


def entry_styles(entries: list[str]) -> dict[str, tuple[Any, str]]:
    """(colour, marker) per entry: colour and marker cycle together, so their pairs stay
    distinct for the first 60 entries (tab10 or tab20 against 12 markers)."""
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab20" if len(entries) > 10 else "tab10").colors
    markers = "osD^v<>pPX*h"
    return {
        entry: (colours[i % len(colours)], markers[i % len(markers)])
        for i, entry in enumerate(entries)
    }


def label_efficiency_figure(summary: pd.DataFrame, dataset: str, metric: str) -> "Figure":
    """Metric against budget, a line per entry and a band for its interval; a panel per method.

    Entries sort naturally (m2 before m10) and each gets its own colour and marker, so 20 and
    more stay apart; the legend sits outside the panels, where it covers no data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summary[(summary["dataset"] == dataset) & (summary["metric"] == metric)].copy()
    table["entry"] = entry_name(table)
    budgets = budget_order(table)
    methods = sorted(table["method"].unique())
    entries = sorted(table["entry"].unique(), key=natural_key)
    styles = entry_styles(entries)
    figure, axes = plt.subplots(
        1, len(methods), figsize=(4.2 * len(methods), 3.8), sharey=True, squeeze=False
    )
    for axis, method in zip(axes[0], methods, strict=True):
        part = table[table["method"] == method]
        for entry in entries:
            lines = part[part["entry"] == entry].set_index("budget").reindex(budgets)
            if lines["mean"].isna().all():
                continue
            colour, marker = styles[entry]
            x = range(len(budgets))
            axis.plot(x, lines["mean"], marker=marker, color=colour, label=entry)
            axis.fill_between(x, lines["ci_low"], lines["ci_high"], color=colour, alpha=0.15)
        axis.set_xticks(range(len(budgets)), budgets, rotation=30)
        axis.set_title(method)
        axis.set_xlabel("label budget")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    _legend_outside(figure, axes[0])
    figure.suptitle(f"{dataset}: {metric} against label budget (mean, 95% interval)")
    figure.tight_layout()
    return figure


def reliability_figure(calibration: pd.DataFrame, dataset: str) -> "Figure":
    """Accuracy against confidence per bin at the largest budget of the run, a panel per
    method and a line per entry; the diagonal is perfect calibration, marker area the count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = calibration.copy()
    table["entry"] = entry_name(table)
    budget = _largest_budget(table["budget"].unique())
    table = table[(table["budget"] == budget) & (table["count"] > 0)]
    methods = sorted(table["method"].unique())
    styles = entry_styles(sorted(table["entry"].unique(), key=natural_key))
    figure, axes = plt.subplots(
        1, len(methods), figsize=(3.8 * len(methods), 3.8), sharey=True, squeeze=False
    )
    for axis, method in zip(axes[0], methods, strict=True):
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        for entry, (colour, marker) in styles.items():
            bins = table[(table["method"] == method) & (table["entry"] == entry)]
            size = 8 + 60 * bins["count"] / max(1, table["count"].max())
            axis.plot(bins["confidence"], bins["accuracy"], color=colour, label=entry)
            axis.scatter(bins["confidence"], bins["accuracy"], s=size, color=colour, marker=marker)
        axis.set(xlim=(0, 1), ylim=(0, 1), title=method, xlabel="confidence")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    _legend_outside(figure, axes[0])
    figure.suptitle(f"{dataset}: reliability at {budget} (top-label, seeds pooled)")
    figure.tight_layout()
    return figure


def _legend_outside(figure: "Figure", axes: Any) -> None:
    """One legend for all panels, right of them where it covers no data; every entry once,
    in the order first drawn, in more columns past 25 entries."""
    handles, labels = [], []
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(
        handles,
        labels,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=8,
        ncols=1 + len(labels) // 25,
        frameon=False,
    )


def _largest_budget(budgets: "list[str] | Any") -> str:
    """'full' if present, else the largest fraction, else the most shots."""
    frame = pd.DataFrame({"budget": list(budgets)})
    frame["kind"] = frame["budget"].map(
        lambda b: "full" if b == "full" else ("shots" if b.endswith("-shot") else "fraction")
    )
    frame["value"] = frame["budget"].map(
        lambda b: float(re.split(r"[- ]", b)[0]) if b != "full" else 0.0
    )
    frame["order"] = frame["kind"].map(KIND_ORDER)
    return frame.sort_values(["order", "value"])["budget"].iloc[-1]


def save_figure(figure: "Figure", path: Path) -> None:
    import matplotlib.pyplot as plt

    write_atomically(
        path, lambda tmp: figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    )
    plt.close(figure)
