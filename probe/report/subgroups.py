"""The report's subgroup section (from subgroups.csv): the headline metric per group with its
interval, gaps and worst groups, each entry's gap against the overall winner's, a sentence
wherever the overall winner is not the best entry for a group, and one figure per dataset."""

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from medprobe.probe.report.figures import entry_styles, save_figure
from medprobe.probe.report.tables import natural_key

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _cell(value: float, low: float, high: float, note: object) -> str:
    if math.isnan(value):
        return f"n/a ({note})" if isinstance(note, str) and note else "n/a"
    if math.isnan(low):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _with_entry(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["entry"] = table["model"].astype(str) + ":" + table["pooling"].astype(str)
    table["cell"] = [
        _cell(v, lo, hi, note)
        for v, lo, hi, note in zip(
            table["value"], table["low"], table["high"], table["note"], strict=True
        )
    ]
    return table


def winner_warnings(table: pd.DataFrame, summary: pd.DataFrame, metric: str) -> list[str]:
    """A sentence per (method, budget, attribute, group) where the entry that wins overall on
    `metric` is beaten in that group by another entry."""
    groups = _with_entry(table[(table["metric"] == metric) & (table["group"].astype(str) != "")])
    overall = summary[summary["metric"] == metric]
    sentences = []
    for (method, budget), cell in groups.groupby(["method", "budget"], sort=False):
        ranked = overall[(overall["method"] == method) & (overall["budget"] == budget)]
        if ranked.empty or cell["entry"].nunique() < 2:
            continue
        best = ranked.loc[ranked["mean"].idxmax()]
        winner = f"{best['model']}:{best['pooling']}"
        for (attribute, group), rows in cell.groupby(["attribute", "group"], sort=False):
            rows = rows.dropna(subset=["value"])
            if winner not in set(rows["entry"]) or len(rows) < 2:
                continue
            top = rows.loc[rows["value"].idxmax()]
            own = float(rows.loc[rows["entry"] == winner, "value"].iloc[0])
            if top["entry"] != winner and top["value"] > own:
                sentences.append(
                    f"- {method}, {budget}: **{winner}** wins overall ({best['mean']:.3f}) but "
                    f"is not the best for {attribute} = {group}: **{top['entry']}** scores "
                    f"{top['value']:.3f} there against {own:.3f}."
                )
    return sentences


def subgroup_section(
    table: pd.DataFrame, summary: pd.DataFrame, dataset: str, metric: str, out_dir: Path
) -> list[str]:
    """Markdown lines of one dataset's subgroup section (and its figure, written to out_dir)."""
    part = table[table["dataset"] == dataset]
    if part.empty:
        return []
    part = _with_entry(part)
    per_group = part[(part["metric"] == metric) & (part["group"].astype(str) != "")]
    pivot = per_group.pivot_table(
        index=["entry", "method", "budget"],
        columns=["attribute", "group"],
        values="cell",
        aggfunc="first",
    )
    pivot.columns = [f"{attribute}={group}" for attribute, group in pivot.columns]
    spreads = part[part["metric"].isin([f"{metric}_gap", f"{metric}_worst", "equalized_odds"])]
    spread_table = spreads.pivot_table(
        index=["entry", "method", "budget"],
        columns=["attribute", "metric"],
        values="cell",
        aggfunc="first",
    )
    spread_table.columns = [f"{attribute}: {m}" for attribute, m in spread_table.columns]
    versus = part[part["metric"] == f"{metric}_gap_vs_winner"]
    figure_path = out_dir / f"{dataset}_subgroups.png"
    save_figure(subgroup_figure(per_group, dataset, metric), figure_path)
    summary_part = summary[summary["dataset"] == dataset]
    warnings = winner_warnings(part, summary_part, metric)
    lines = [
        f"### For whom: {metric} per subgroup",
        "",
        "Each group's value is the mean over seeds with its 95 % interval over the test "
        "resamples and seeds (the same resamples as the summary, so gaps and differences are "
        "paired); n/a marks a group where the metric is not defined (e.g. one class only).",
        "",
        pivot.reset_index().to_markdown(index=False),
        "",
        f"![{dataset} subgroups]({figure_path.name})",
        "",
        "Gap (best minus worst group), worst group, and equalized odds (the larger of the TPR "
        "and FPR gaps at the threshold chosen on val):",
        "",
        spread_table.reset_index().to_markdown(index=False),
        "",
    ]
    if warnings:
        lines += ["The overall winner is not the best for every group:", "", *warnings, ""]
    if not versus.empty:
        lines += [
            f"Each entry's {metric} gap minus the overall winner's (`group`), paired on the "
            "same resamples; below zero, this entry's gap is smaller:",
            "",
            versus[["entry", "method", "budget", "attribute", "group", "cell"]]
            .rename(columns={"group": "winner", "cell": "gap difference [95% interval]"})
            .to_markdown(index=False),
            "",
        ]
    return lines


def subgroup_figure(per_group: pd.DataFrame, dataset: str, metric: str) -> "Figure":
    """The headline metric per group, a panel per attribute, a point and 95 % bar per entry,
    at the first method and the last budget of the table (the section's tables hold the rest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    method, budget = per_group["method"].iloc[0], per_group["budget"].iloc[-1]
    shown = per_group[(per_group["method"] == method) & (per_group["budget"] == budget)]
    attributes = list(dict.fromkeys(shown["attribute"]))
    entries = sorted(shown["entry"].unique(), key=natural_key)
    styles = entry_styles(entries)
    figure, axes = plt.subplots(
        1, len(attributes), figsize=(3.8 * len(attributes), 3.6), sharey=True, squeeze=False
    )
    for axis, attribute in zip(axes[0], attributes, strict=True):
        rows = shown[shown["attribute"] == attribute]
        groups = list(dict.fromkeys(rows["group"].astype(str)))
        for offset, entry in enumerate(entries):
            points = rows[rows["entry"] == entry]
            points = points.set_index(points["group"].astype(str)).reindex(groups)
            x = [i + (offset - (len(entries) - 1) / 2) * 0.12 for i in range(len(groups))]
            colour, marker = styles[entry]
            # the point is the mean over seeds, the interval is of resampled means: clip at 0
            errors = [
                (points["value"] - points["low"]).clip(lower=0),
                (points["high"] - points["value"]).clip(lower=0),
            ]
            axis.errorbar(x, points["value"], yerr=errors, fmt=marker, color=colour, label=entry)
        axis.set_xticks(range(len(groups)), groups, rotation=30)
        axis.set_title(attribute)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    figure.suptitle(f"{dataset}: {metric} per group ({method}, {budget}; mean, 95% interval)")
    figure.tight_layout()
    return figure
