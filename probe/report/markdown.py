"""report.md: per dataset, the headline table with its intervals, the label-efficiency plot,
the ranking, the paired differences, calibration and every metric."""

from pathlib import Path
from typing import Any

from medprobe.cache.files.atomic import write_atomically
from medprobe.probe.report.answer import budget_answers
from medprobe.probe.report.figures import (
    label_efficiency_figure,
    reliability_figure,
    save_figure,
)
from medprobe.probe.report.subgroups import subgroup_section
from medprobe.probe.report.tables import CELL_KEY, RunTables, headline_table, metrics_table
from medprobe.probe.stats.paired import INTERVAL_NOTES, headline_of, ranking

REPORT_FILE = "report.md"


def n_classes_of(task: dict[str, Any]) -> int | None:
    """Classes of a single-label task (for the chance line), None for multi-label ones."""
    labels = task.get("label_names") or []
    return len(labels) if labels and task.get("kind") != "multilabel" else None


def write_report(results: RunTables, out_dir: Path, *, title: str | None = None) -> Path:
    """Write report.md and one label-efficiency PNG per dataset into `out_dir`; return
    report.md. Reads only what `Results.save` writes, so `probe report` can rebuild it.
    `title` defaults to the folder's name."""
    summary, all_paired = results.summary_table, results.paired_table
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
        answers = budget_answers(summary, all_paired, dataset, metric)
        lines += [f"## {dataset} — headline metric: {metric}", ""]
        aggregated = results.run.get("aggregated", {}).get(dataset)
        if aggregated:
            lines += [
                f"Scored per {aggregated['unit']}: {aggregated['n_units']} units from "
                f"{aggregated['n_images']} test images, image probabilities pooled by "
                f"{aggregated['pool']}.",
                "",
            ]
        lines += [
            *[f"- {answer.sentence}" for answer in answers],
            "",
            headline_table(part, metric).reset_index().to_markdown(index=False),
            "",
            f"_{CELL_KEY}._",
            "",
        ]
        plot = out_dir / f"{dataset}_{metric}.png"
        figure = label_efficiency_figure(part, dataset, metric, n_classes=n_classes_of(task))
        save_figure(figure, plot)
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
                paired.drop(columns=["dataset", "metric"])
                .dropna(axis="columns", how="all")
                .to_markdown(index=False, floatfmt=".3f"),
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
            save_figure(figure, reliability)
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
        subgroups = getattr(results, "subgroups_table", None)
        if subgroups is not None and not subgroups.empty:
            lines += subgroup_section(subgroups, part, dataset, metric, out_dir)
        lines += [
            f"### All metrics (mean over seeds; {metric} first; per-label values in summary.csv)",
            "",
            metrics_table(part, metric).to_markdown(index=False, floatfmt=".3f"),
            "",
        ]
    report = out_dir / REPORT_FILE
    write_atomically(report, lambda tmp: tmp.write_text("\n".join(lines)))
    return report
