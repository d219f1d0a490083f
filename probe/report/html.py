"""report.html: one self-contained page per results folder, rendered from the Jinja2 templates in
`templates/` (inline CSS, inline SVG figures, a little vanilla JS, a Content-Security-Policy that
forbids every network request), so it opens from a USB stick on a hospital machine.

Top of each dataset: the answer (`answer.budget_answers`); then the leaderboard (sortable,
filterable), label-efficiency curves, the paired comparisons, reliability diagrams, subgroups
when the run has them, similarity heatmaps when a similarity run is given, and provenance.
"""

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from medprobe.cache.files.atomic import write_atomically
from medprobe.probe.report.answer import METHOD_WORDS, budget_answers
from medprobe.probe.report.figures import label_efficiency_figure, reliability_figure, svg_markup
from medprobe.probe.report.markdown import n_classes_of
from medprobe.probe.report.tables import (
    CELL_KEY,
    RunTables,
    budget_order,
    interval_cell,
    natural_key,
)
from medprobe.probe.stats.paired import INTERVAL_NOTES, SIGNIFICANCE, entry_name, headline_of

if TYPE_CHECKING:
    from jinja2 import Environment


class SimilarityPage(Protocol):
    """What the page reads of a similarity run (`similarity.report.SimilarityResults` is one;
    named by shape so `report` never imports `similarity`, which renders its page here)."""

    settings: dict[str, Any]
    datasets: dict[str, dict[str, Any]]

    @property
    def metrics(self) -> list[str]: ...

    def metric_title(self, metric: str) -> str: ...

    def plot(self, dataset: str, metric: str) -> Any: ...


HTML_FILE = "report.html"
SIMILARITY_HTML_FILE = "similarity.html"
# Under this many test images a reliability diagram's bins hold a handful of images each.
FEW_TEST_IMAGES = 100
HEADLINE_WHY = {
    "roc_auc": "the published studies' metric for a binary finding: threshold-free, so it "
    "compares models before anyone picks an operating point",
    "balanced_accuracy": "classes are imbalanced: the mean recall per class counts a rare "
    "lesion as much as a common one",
    "quadratic_kappa": "grades are ordered: a miss by one grade costs less than a miss by four, "
    "as graders are scored",
    "mean_auroc": "several findings per image: the AUROC of each finding, averaged",
    "accuracy": "the published default for this dataset (classes roughly balanced)",
}


def _environment() -> "Environment":
    from jinja2 import Environment, PackageLoader, select_autoescape

    environment = Environment(
        loader=PackageLoader("medprobe.probe.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["markdown_inline"] = _markdown_inline
    return environment


def _markdown_inline(text: str) -> Any:
    """`**bold**` and `code` of INTERVAL_NOTES as HTML, everything else escaped."""
    from markupsafe import Markup, escape

    html = str(escape(text))
    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html)
    html = re.sub(r"`(.+?)`", r"<code>\1</code>", html)
    html = re.sub(r"\*(.+?)\*", r"<em>\1</em>", html)
    return Markup(html)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _leaderboard(part: pd.DataFrame, metric: str) -> list[dict[str, Any]]:
    """One row per (entry, method, budget) of the headline metric, in budget then rank order."""
    table = part[part["metric"] == metric].copy()
    table["entry"] = entry_name(table)
    order = {budget: i for i, budget in enumerate(budget_order(table))}
    table["budget_rank"] = table["budget"].map(order)
    table = table.sort_values(["budget_rank", "mean"], ascending=[True, False])
    return [
        {
            "model": row["model"],
            "pooling": row["pooling"],
            "method": row["method"],
            "budget": row["budget"],
            "budget_rank": int(row["budget_rank"]),
            "mean": _number(row["mean"]),
            "cell": interval_cell(row["mean"], row["ci_low"], row["ci_high"], row["interval"]),
            "n_seeds": int(row["n_seeds"]),
            "interval": row["interval"],
        }
        for _, row in table.iterrows()
    ]


def _paired_matrix(part: pd.DataFrame, paired: pd.DataFrame, metric: str) -> dict[str, Any]:
    """Rows entries (natural order), columns (method, budget): 'best', or the paired difference
    to the best entry of that column with its p and whether it is significant."""
    table = part[part["metric"] == metric].copy()
    table["entry"] = entry_name(table)
    budgets = budget_order(table)
    methods = sorted(table["method"].unique())
    columns = [(m, b) for m in methods for b in budgets]
    entries = sorted(table["entry"].unique(), key=natural_key)
    rows = []
    for entry in entries:
        cells = []
        for method, budget in columns:
            cell: dict[str, Any] = {"text": "", "kind": "none", "title": ""}
            if not paired.empty and "entry" in paired.columns:
                match = paired[
                    (paired["method"] == method)
                    & (paired["budget"] == budget)
                    & (paired["entry"] == entry)
                ]
                best = paired[(paired["method"] == method) & (paired["budget"] == budget)]
                if not match.empty:
                    row = match.iloc[0]
                    p_value = _number(row["p_value"])
                    significant = p_value is not None and p_value < SIGNIFICANCE
                    cell = {
                        "text": f"{row['difference']:+.3f}" + (" *" if significant else ""),
                        "kind": "worse" if significant else "tie",
                        "title": f"{row['test']}, p = {p_value:.3g}"
                        if p_value is not None
                        else str(row["test"]),
                    }
                elif not best.empty and best["best"].iloc[0] == entry:
                    cell = {"text": "best", "kind": "best", "title": "best entry of this column"}
            cells.append(cell)
        rows.append({"entry": entry, "cells": cells})
    return {"columns": columns, "rows": rows}


def _provenance(run: dict[str, Any], dataset: str) -> dict[str, Any]:
    """Stores of `dataset` with their checkpoints and keys, and its test size, from run.json
    (or, for a run.json written before it recorded them, from the stores if still there)."""
    from medprobe.cache import ToolkitError, open_store

    stores, images, groups = [], None, None
    for record in run.get("stores", []):
        record = dict(record)
        if "dataset" not in record:
            try:
                store = open_store(record["path"])
                record.update(dataset=store.dataset_name, model=store.spec.get("model", {}))
                record["test_images"] = store.n_rows.get("test")
            except (OSError, ToolkitError):  # a moved or deleted store: its key still names it
                record.setdefault("model", {})
        if record.get("dataset") not in (dataset, None):
            continue
        model = record.get("model") or {}
        stores.append(
            {
                "name": model.get("name", Path(record["path"]).stem),
                "checkpoint": model.get("checkpoint") or model.get("source") or "—",
                "random_init": model.get("pretrained") is False,
                "key": record.get("key", "—"),
                "path": record["path"],
            }
        )
        images = images or record.get("test_images")
        groups = groups or record.get("test_groups")
    return {"stores": stores, "test_images": images, "test_groups": groups}


def _subgroups(results: RunTables, dataset: str) -> str | None:
    """The run's subgroup table of `dataset` as HTML, when the run has one."""
    table = getattr(results, "subgroups_table", None)
    if table is None or not isinstance(table, pd.DataFrame) or table.empty:
        return None
    if "dataset" in table.columns:
        table = table[table["dataset"] == dataset].drop(columns="dataset")
    if table.empty:
        return None
    return table.to_html(index=False, float_format="{:.3f}".format, border=0, na_rep="—")


def _dataset_section(results: RunTables, dataset: str, task: dict[str, Any]) -> dict[str, Any]:
    summary = results.summary_table
    part = summary[summary["dataset"] == dataset]
    metric = headline_of(task, part)
    paired = results.paired_table
    if not paired.empty and "dataset" in paired.columns:
        paired = paired[(paired["dataset"] == dataset) & (paired["metric"] == metric)]
    n_classes = n_classes_of(task)
    provenance = _provenance(results.run, dataset)
    calibration = results.calibration
    reliability = None
    if not calibration.empty and (calibration["dataset"] == dataset).any():
        part_calibration = calibration[calibration["dataset"] == dataset]
        reliability = svg_markup(reliability_figure(part_calibration, dataset))
    leaderboard = _leaderboard(part, metric)
    return {
        "name": dataset,
        "metric": metric,
        "why": HEADLINE_WHY.get(metric, "the metric this dataset's task names"),
        "task": task,
        "answers": budget_answers(summary, results.paired_table, dataset, metric),
        "leaderboard": leaderboard,
        "budgets": budget_order(part),
        "methods": sorted(part["method"].unique()),
        "poolings": sorted(part["pooling"].unique()),
        "curves": svg_markup(label_efficiency_figure(part, dataset, metric, n_classes=n_classes)),
        "paired": _paired_matrix(part, paired, metric),
        "reliability": reliability,
        "few_test_images": (provenance["test_images"] or 0) < FEW_TEST_IMAGES,
        "subgroups": _subgroups(results, dataset),
        **provenance,
    }


def _similarity_sections(similarity: SimilarityPage | None) -> list[dict[str, Any]]:
    if similarity is None:
        return []
    return [
        {
            "dataset": dataset,
            "metric": similarity.metric_title(metric),
            "svg": svg_markup(similarity.plot(dataset, metric)),
        }
        for dataset in similarity.datasets
        for metric in similarity.metrics
    ]


def render_page(
    *,
    title: str,
    datasets: Iterable[dict[str, Any]] = (),
    run: dict[str, Any] | None = None,
    similarity: SimilarityPage | None = None,
) -> str:
    """The page's HTML (also what `probe similarity` writes, with no datasets)."""
    run = run or {}
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=title,
            datasets=list(datasets),
            run=run,
            config=run.get("config", {}),
            similarity=_similarity_sections(similarity),
            similarity_settings=None if similarity is None else similarity.settings,
            cell_key=CELL_KEY,
            interval_notes=INTERVAL_NOTES,
            method_words=METHOD_WORDS,
            few_test_images=FEW_TEST_IMAGES,
        )
    )


def write_html_report(
    results: RunTables,
    out_dir: Path,
    *,
    title: str | None = None,
    similarity: SimilarityPage | None = None,
) -> Path:
    """Write report.html into `out_dir` (atomically) and return its path; `similarity` (a
    `probe similarity` run) adds its heatmaps."""
    sections = [
        _dataset_section(results, dataset, task)
        for dataset, task in results.run["datasets"].items()
        if (results.summary_table["dataset"] == dataset).any()
    ]
    page = render_page(
        title=title or out_dir.name, datasets=sections, run=results.run, similarity=similarity
    )
    path = out_dir / HTML_FILE
    write_atomically(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def write_similarity_page(similarity: SimilarityPage, out_dir: Path) -> Path:
    """similarity.html beside what `SimilarityResults.save` wrote: the page of a run's report
    with the heatmaps only (written here because `similarity` never imports `report`)."""
    page = render_page(title=f"Representation similarity: {out_dir.name}", similarity=similarity)
    path = out_dir / SIMILARITY_HTML_FILE
    write_atomically(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path
