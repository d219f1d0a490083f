"""Tables, a label-efficiency plot per dataset and a Markdown report, from a results folder."""

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from medprobe.cache.errors import ToolkitError
from medprobe.probe.budgets import KIND_ORDER
from medprobe.probe.stats import entry_name, paired_differences, ranking, summarise

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.csv"
RUN_FILE = "run.json"


def load_run(out_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    results_path, run_path = out_dir / RESULTS_FILE, out_dir / RUN_FILE
    if not results_path.is_file() or not run_path.is_file():
        raise ToolkitError(
            f"{out_dir} is not a probe results folder (needs {RESULTS_FILE} and "
            f"{RUN_FILE}, as `probe run --out` writes)"
        )
    return pd.read_csv(results_path), json.loads(run_path.read_text())


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


def headline_table(summary: pd.DataFrame, metric: str, *, compact: bool = False) -> pd.DataFrame:
    """Rows (entry, method), columns budgets: 'mean [95% interval]' of the headline metric
    ('mean ± half-width' when `compact`, for terminals)."""
    table = summary[summary["metric"] == metric].copy()
    table["entry"] = entry_name(table)
    format_cell = _compact_cell if compact else _cell
    table["cell"] = [
        format_cell(m, lo, hi)
        for m, lo, hi in zip(table["mean"], table["ci_low"], table["ci_high"], strict=True)
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


def plot_label_efficiency(summary: pd.DataFrame, dataset: str, metric: str, path: Path) -> None:
    """Metric against budget, a line per entry and a band for its interval; a panel per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summary[(summary["dataset"] == dataset) & (summary["metric"] == metric)].copy()
    table["entry"] = entry_name(table)
    budgets = budget_order(table)
    methods = sorted(table["method"].unique())
    figure, axes = plt.subplots(
        1, len(methods), figsize=(4.2 * len(methods), 3.6), sharey=True, squeeze=False
    )
    for axis, method in zip(axes[0], methods, strict=True):
        for entry, lines in table[table["method"] == method].groupby("entry"):
            lines = lines.set_index("budget").reindex(budgets)
            x = range(len(budgets))
            axis.plot(x, lines["mean"], marker="o", label=entry)
            axis.fill_between(x, lines["ci_low"], lines["ci_high"], alpha=0.2)
        axis.set_xticks(range(len(budgets)), budgets, rotation=30)
        axis.set_title(method)
        axis.set_xlabel("label budget")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(fontsize=8, loc="lower right")
    figure.suptitle(f"{dataset}: {metric} against label budget (mean, 95% interval over seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def build_report(out_dir: Path) -> Path:
    """Write summary.csv, paired.csv, one PNG per dataset and report.md; return report.md."""
    results, run = load_run(out_dir)
    summary = summarise(results)
    summary.to_csv(out_dir / "summary.csv", index=False)
    lines = [
        f"# Probe report: {out_dir.name}",
        "",
        f"Seeds: {run['config']['seeds']}; methods: {', '.join(run['config']['methods'])}; "
        f"backend: {run['config']['backend']}. Intervals are 95% Student-t over seeds; "
        "differences are paired on identical support sets.",
        "",
    ]
    paired_tables = []
    for dataset, task in run["datasets"].items():
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
        plot_label_efficiency(part, dataset, metric, plot)
        lines += [
            f"![{dataset} label efficiency]({plot.name})",
            "",
            "### Ranking",
            "",
            ranking(part, metric).to_markdown(index=False, floatfmt=".3f"),
            "",
        ]
        paired = paired_differences(results[results["dataset"] == dataset], metric)
        if not paired.empty:
            paired.insert(0, "dataset", dataset)
            paired_tables.append(paired)
            lines += [
                "### Paired difference to the best entry",
                "",
                paired.drop(columns="dataset").to_markdown(index=False, floatfmt=".3f"),
                "",
            ]
        lines += [
            f"### All metrics (mean over seeds; {metric} first; per-label values in summary.csv)",
            "",
            metrics_table(part, metric).to_markdown(index=False, floatfmt=".3f"),
            "",
        ]
    if paired_tables:
        pd.concat(paired_tables).to_csv(out_dir / "paired.csv", index=False)
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def print_report(out_dir: Path, console: Console) -> None:
    """The headline table and ranking of each dataset, on the terminal."""
    results, run = load_run(out_dir)
    summary = summarise(results)
    for dataset, task in run["datasets"].items():
        part = summary[summary["dataset"] == dataset]
        if part.empty:
            continue
        metric = headline_of(task, part)
        pivot = headline_table(part, metric, compact=True)
        table = Table(title=f"{dataset}: {metric} (mean ± 95% interval over seeds)")
        table.add_column("model:pooling", no_wrap=True)
        table.add_column("method")
        for budget in pivot.columns:
            table.add_column(budget, justify="right")
        for (entry, method), values in pivot.iterrows():
            table.add_row(entry, method, *(str(v) for v in values))
        console.print(table)
        ranked = ranking(part, metric)
        console.print(
            "ranking: "
            + ", ".join(
                f"{i + 1}. {e} (mean rank {r:.1f})"
                for i, (e, r) in enumerate(zip(ranked["entry"], ranked["mean_rank"], strict=True))
            )
        )
