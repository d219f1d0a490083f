"""Tables, a label-efficiency plot per dataset and a Markdown report, from a `Results`."""

import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medprobe.cache.atomic import write_atomically
from medprobe.probe.budgets import KIND_ORDER
from medprobe.probe.stats import INTERVAL_NOTES, entry_name, ranking

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from medprobe.probe.results import Results

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"


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


def headline_of(task: dict[str, Any], summary: pd.DataFrame) -> str:
    """The task's headline metric, or the first metric the results hold if they lack it (a store
    whose task names a metric its labels cannot give, e.g. roc_auc with no test positives)."""
    wanted = task.get("headline_metric", "accuracy")
    present = list(dict.fromkeys(summary["metric"]))
    if wanted in present or not present:
        return wanted
    logger.warning("headline metric %r not in the results; leading with %r", wanted, present[0])
    return present[0]


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


def _save_figure(figure: "Figure", path: Path) -> None:
    import matplotlib.pyplot as plt

    write_atomically(
        path, lambda tmp: figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    )
    plt.close(figure)


def write_report(results: "Results", out_dir: Path, *, title: str | None = None) -> Path:
    """Write report.md and one label-efficiency PNG per dataset into `out_dir`; return
    report.md. Reads only what `Results.save` writes, so `probe report` can rebuild it.
    `title` defaults to the folder's name."""
    summary, all_paired = results.summary(), results.paired()
    config = results.run["config"]
    resamples = config.get("bootstrap", 0)
    clustered = [d for d, by in results.run.get("resampled_by_group", {}).items() if by]
    lines = [
        f"# Probe report: {title or out_dir.name}",
        "",
        f"Seeds: {config['seeds']}; methods: {', '.join(config['methods'])}; "
        f"backend: {config['backend']}; test bootstrap: "
        + (f"B = {resamples} resamples" if resamples else "off")
        + (
            f", whole patients/lesions resampled together for {', '.join(clustered)}"
            if clustered
            else ""
        )
        + ".",
        "",
        INTERVAL_NOTES,
        "",
    ]
    for dataset, task in results.run["datasets"].items():
        part = summary[summary["dataset"] == dataset]
        if part.empty:
            continue
        metric = headline_of(task, part)
        lines += [
            f"## {dataset} — headline metric: {metric}",
            "",
            headline_table(part, metric).reset_index().to_markdown(index=False),
            "",
        ]
        plot = out_dir / f"{dataset}_{metric}.png"
        _save_figure(label_efficiency_figure(part, dataset, metric), plot)
        lines += [
            f"![{dataset} label efficiency]({plot.name})",
            "",
            "### Ranking",
            "",
            ranking(part, metric).to_markdown(index=False, floatfmt=".3f"),
            "",
        ]
        paired = (
            all_paired[all_paired["dataset"] == dataset] if not all_paired.empty else all_paired
        )
        if not paired.empty:
            lines += [
                "### Paired difference to the best entry",
                "",
                paired.drop(columns=["dataset", "metric"]).to_markdown(index=False, floatfmt=".3f"),
                "",
            ]
        if part["ci_seeds_and_test_low"].notna().any():
            lines += [
                f"### {metric}: interval over seeds and test images together",
                "",
                headline_table(
                    part, metric, columns=("ci_seeds_and_test_low", "ci_seeds_and_test_high")
                )
                .reset_index()
                .to_markdown(index=False),
                "",
            ]
        calibration = results.calibration
        if not calibration.empty and (calibration["dataset"] == dataset).any():
            reliability = out_dir / f"{dataset}_reliability.png"
            figure = reliability_figure(calibration[calibration["dataset"] == dataset], dataset)
            _save_figure(figure, reliability)
            lines += [
                "### Calibration",
                "",
                "ECE: top-label confidence in 15 equal-width bins, the bin-size-weighted mean "
                "|accuracy - confidence| (multi-label: the mean over labels of the binary ECE); "
                "Brier: the mean over images of the summed squared error to the one-hot label; "
                "log loss: the mean negative log-probability of the true class. All three are "
                "in the table below; the diagram pools the seeds of the largest budget.",
                "",
                f"![{dataset} reliability]({reliability.name})",
                "",
            ]
        lines += [
            f"### All metrics (mean over seeds; {metric} first; per-label values in summary.csv)",
            "",
            metrics_table(part, metric).to_markdown(index=False, floatfmt=".3f"),
            "",
        ]
    report = out_dir / REPORT_FILE
    write_atomically(report, lambda tmp: tmp.write_text("\n".join(lines)))
    return report


def print_report(results: "Results", console: Console) -> None:
    """The headline table and ranking of each dataset, on the terminal."""
    summary = results.summary()
    for dataset, task in results.run["datasets"].items():
        part = summary[summary["dataset"] == dataset]
        if part.empty:
            continue
        metric = headline_of(task, part)
        pivot = headline_table(part, metric, compact=True)
        table = Table(
            title=escape(
                f"{dataset}: {metric} (mean ± 95% interval: over seeds; full budget: over test "
                "resamples)"
            )
        )
        table.add_column("model:pooling", no_wrap=True)
        table.add_column("method")
        for budget in pivot.columns:
            table.add_column(budget, justify="right")
        for (entry, method), values in pivot.iterrows():
            table.add_row(escape(entry), method, *(str(v) for v in values))
        console.print(table)
        ranked = ranking(part, metric)
        console.print(
            "ranking: "
            + ", ".join(
                f"{i + 1}. {escape(e)} (mean rank {r:.1f})"
                for i, (e, r) in enumerate(zip(ranked["entry"], ranked["mean_rank"], strict=True))
            ),
            highlight=False,
        )
