"""The report's figures: label efficiency against budget and reliability diagrams, one style
(colour and marker per entry, natural order, legend beside the panels) for both.

Every figure uses matplotlib's constrained layout and a legend placed *outside the axes but
inside the canvas* (`loc="outside right center"`), so a plain `figure.savefig(path)` from a
notebook keeps the legend and the title: no `bbox_inches="tight"` needed."""

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


# Kelly's colours of maximum contrast (less white and black), yellow last: 20 colours no two of
# which share a hue and lightness, where tab20 pairs each hue with its paler twin.
PALETTE = (
    "#0067A5",
    "#F38400",
    "#008856",
    "#BE0032",
    "#875692",
    "#882D17",
    "#E68FAC",
    "#848482",
    "#8DB600",
    "#A1CAF1",
    "#604E97",
    "#F6A600",
    "#B3446C",
    "#2B3D26",
    "#C2B280",
    "#654522",
    "#E25822",
    "#F99379",
    "#DCD300",
    "#F3C300",
)
MARKERS = "osD^v<>pPX*h"
RELIABILITY_BINS_NOTE = "bins of equal width; marker area ~ images per bin"


def entry_styles(entries: list[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per entry: 20 distinct colours, and colour and marker cycle together,
    so (colour, marker) pairs stay distinct for the first 60 entries."""
    return {
        entry: (PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)])
        for i, entry in enumerate(entries)
    }


def label_efficiency_figure(
    summary: pd.DataFrame, dataset: str, metric: str, *, n_classes: int | None = None
) -> "Figure":
    """Metric against budget, a line per entry and a band for its interval; a panel per method.

    Entries sort naturally (m2 before m10) and each gets its own colour and marker, so 20 and
    more stay apart; the legend sits outside the panels, where it covers no data. With
    `n_classes`, a dotted line marks chance on accuracy-like metrics (1/K; 0.5 for AUROC).
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
        1,
        len(methods),
        figsize=(4.2 * len(methods) + 1.6, 3.8),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    chance = _chance_level(metric, n_classes)
    for axis, method in zip(axes[0], methods, strict=True):
        part = table[table["method"] == method]
        if chance is not None:
            axis.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
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
    figure.suptitle(f"{dataset}: {metric} against label budget\n(mean, 95% interval)", fontsize=11)
    return figure


def _chance_level(metric: str, n_classes: int | None) -> float | None:
    """What guessing scores: 0.5 for any AUROC, 1/K for balanced accuracy (and accuracy, where
    it is the score of a uniform guess), 0 for kappa; None where it depends on the classes."""
    if "auroc" in metric or metric == "roc_auc":
        return 0.5
    if metric == "quadratic_kappa":
        return 0.0
    if metric in ("accuracy", "balanced_accuracy") and n_classes:
        return 1.0 / n_classes
    return None


def reliability_figure(calibration: pd.DataFrame, dataset: str) -> "Figure":
    """Accuracy against confidence per bin at the largest budget of the run, a panel per
    method and a line per entry; the diagonal is perfect calibration, marker area the count,
    and the title says how many bins (so a reader can judge the images behind each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = calibration.copy()
    table["entry"] = entry_name(table)
    budget = _largest_budget(table["budget"].unique())
    n_bins = table.groupby(["entry", "method", "budget"]).size().max()
    table = table[(table["budget"] == budget) & (table["count"] > 0)]
    methods = sorted(table["method"].unique())
    styles = entry_styles(sorted(table["entry"].unique(), key=natural_key))
    figure, axes = plt.subplots(
        1,
        len(methods),
        figsize=(3.8 * len(methods) + 1.6, 3.8),
        sharey=True,
        squeeze=False,
        layout="constrained",
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
    figure.suptitle(
        f"{dataset}: reliability at {budget} (top label, seeds pooled; {n_bins} "
        f"{RELIABILITY_BINS_NOTE})",
        fontsize=10,
        wrap=True,  # a long dataset name over one panel stays inside the canvas
    )
    return figure


def _legend_outside(figure: "Figure", axes: Any) -> None:
    """One legend for all panels, right of them where it covers no data but inside the canvas
    (constrained layout makes room for it); every entry once, in the order first drawn, in more
    columns past 25 entries."""
    handles, labels = [], []
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(
        handles,
        labels,
        loc="outside right center",
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
    """The figure as a PNG, published atomically; the canvas already holds legend and title."""
    import matplotlib.pyplot as plt

    write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=120, format="png"))
    plt.close(figure)


def svg_markup(figure: "Figure") -> str:
    """The figure as an `<svg>` element to inline in HTML: text kept as text (small, sharp,
    searchable), no XML prolog, DOCTYPE, metadata or namespace URLs (nothing a browser could
    fetch, and nothing that looks like a link), fixed ids so the page is reproducible."""
    import io

    import matplotlib
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "medprobe"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(figure)
    markup = buffer.getvalue()
    markup = markup[markup.index("<svg") :]
    markup = re.sub(r"<metadata>.*?</metadata>", "", markup, flags=re.DOTALL)
    markup = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", markup)
    markup = re.sub(r'\s+version="[^"]*"', "", markup)
    return markup
