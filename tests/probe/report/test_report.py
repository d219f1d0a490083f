"""The report leads with each dataset's headline metric, in every file a reader opens first."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from medprobe.cache import ToolkitError
from medprobe.probe.cli import app
from medprobe.probe.run.results import Results
from tests.probe.conftest import write_blob_store

runner = CliRunner()


@pytest.mark.parametrize(
    ("kind", "headline"),
    [("multiclass", "balanced_accuracy"), ("ordinal", "quadratic_kappa")],
)
def test_headline_metric_leads_results_summary_and_report(tmp_path, kind, headline):
    root = tmp_path / "embeddings"
    for model, separation in (("strong", 3.0), ("weak", 0.3)):
        write_blob_store(
            root, model=model, separation=separation, kind=kind, headline=headline, dataset="derm"
        )
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["run", "--shots", "2,4", "--seeds", "3", "--cache-dir", str(root), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    results = pd.read_csv(out / "results.csv")
    assert results["metric"].iloc[0] == headline
    summary = pd.read_csv(out / "summary.csv")
    assert summary["metric"].iloc[0] == headline
    report = (out / "report.md").read_text()
    assert f"## derm — headline metric: {headline}" in report
    header = next(
        line for line in report.splitlines() if line.startswith("| entry ") and "budget" in line
    )
    assert header.split("|")[4].strip() == headline  # entry, method, budget, then the headline
    assert (out / f"derm_{headline}.png").stat().st_size > 5000
    assert "Paired difference to the best entry" in report and "weak:cls" in report
    assert f"derm: {headline}" in result.output  # the terminal table too
    assert json.loads((out / "run.json").read_text())["command"].startswith("probe run --shots")
    # the terminal and the files print one text per cell
    strong = summary.query("model == 'strong' and metric == @headline and budget == '4-shot'")
    assert strong["shown"].iloc[0] in result.output and strong["shown"].iloc[0] in report


def test_report_of_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(ToolkitError, match="not a probe results folder"):
        Results.load(tmp_path)
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert isinstance(result.exception, ToolkitError)


def test_importing_the_probe_cli_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, medprobe.probe.cli, medprobe.probe.run.sweep; print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.stdout.strip() == "False", completed.stderr


def test_the_label_efficiency_plot_keeps_twelve_entries_apart_in_natural_order():
    from medprobe.probe.report.figures import label_efficiency_figure

    rows = [
        {
            "dataset": "d",
            "model": f"m{i}",
            "pooling": "cls",
            "method": "knn",
            "budget": budget,
            "budget_kind": "shots",
            "budget_value": value,
            "metric": "accuracy",
            "mean": 0.5 + 0.01 * i + 0.02 * value,
            "ci_low": 0.4,
            "ci_high": 0.9,
        }
        for i in range(1, 13)
        for budget, value in (("1-shot", 1), ("5-shot", 5))
    ]
    figure = label_efficiency_figure(pd.DataFrame(rows), "d", "accuracy")
    (legend,) = figure.legends
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels == [f"m{i}:cls" for i in range(1, 13)]  # m2 before m10
    lines = figure.axes[0].get_lines()
    styles = {(line.get_color(), line.get_marker()) for line in lines}
    assert len(styles) == 12, "every entry has its own colour and marker"
    figure.canvas.draw()
    legend_box = legend.get_window_extent()
    axes_box = figure.axes[0].get_window_extent()
    assert legend_box.x0 >= axes_box.x1, "the legend sits beside the panels, not on the data"
