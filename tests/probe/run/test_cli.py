"""`probe run` end to end on real stores, and every bad input as one clear error."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from medprobe.cache import ToolkitError
from medprobe.cache.console import cli_message
from medprobe.probe.cli import app
from tests.probe.conftest import write_blob_store

runner = CliRunner()


def probe(*args):
    return runner.invoke(app, ["run", *args], catch_exceptions=True)


def test_run_writes_results_report_and_plot_and_ranks_the_better_model_first(blob_root, tmp_path):
    out = tmp_path / "out"
    result = probe(
        "--shots", "1,5", "--seeds", "3", "--cache-dir", str(blob_root), "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns[:8]) == [
        "dataset",
        "model",
        "pooling",
        "method",
        "budget",
        "budget_kind",
        "budget_value",
        "seed",
    ]
    assert set(results["method"]) == {"logreg", "knn", "prototype"}
    assert set(results["seed"]) == {0, 1, 2}
    accuracy = results[results["metric"] == "accuracy"].groupby("model")["value"].mean()
    assert accuracy["strong"] > accuracy["weak"] + 0.2
    report = (out / "report.md").read_text()
    assert "## blobs — headline metric: accuracy" in report
    assert (out / "blobs_accuracy.png").stat().st_size > 5000
    assert "1. strong:cls" in result.output
    supports = json.loads((out / "supports.json").read_text())
    assert len(supports) == 2 * 3
    test_ids = set(pd.Series([f"case{i:04d}.png" for i in range(200, 300)]))
    assert all(not test_ids & set(ids) for ids in supports.values())
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["budgets"] == ["1-shot", "5-shot"]


def test_support_sets_are_shared_across_stores_whatever_their_row_order(tmp_path):
    """Two stores with identical embeddings in different row order must score identically:
    supports are drawn and looked up by id, so every model sees the same labelled images."""
    from medprobe.probe.run.settings import ProbeSettings
    from medprobe.probe.run.supports import draw_supports
    from medprobe.probe.run.sweep import run_sweep
    from medprobe.probe.targets import select_targets

    root = tmp_path / "embeddings"
    write_blob_store(root, model="ordered", separation=1.0, noise_seed=7)
    write_blob_store(root, model="shuffled", separation=1.0, noise_seed=7, shuffle_rows=True)
    targets = select_targets(root)
    config = ProbeSettings(shots=[2, 5], seeds=3)
    outcomes = run_sweep(targets, draw_supports(targets, config), config)
    rows = pd.DataFrame([row for outcome in outcomes for row in outcome.rows])
    keys = ["method", "budget", "seed", "metric"]
    by_model = {
        m: group.set_index(keys)["value"].sort_index() for m, group in rows.groupby("model")
    }
    pd.testing.assert_series_equal(
        by_model["ordered"], by_model["shuffled"], atol=1e-6, check_names=False
    )


def test_report_command_rebuilds_from_the_folder(blob_root, tmp_path):
    out = tmp_path / "out"
    assert (
        probe(
            "--shots", "2", "--seeds", "2", "--cache-dir", str(blob_root), "--out", str(out)
        ).exit_code
        == 0
    )
    (out / "report.md").unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0 and (out / "report.md").is_file()


def test_multilabel_store_reports_mean_auroc(tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="m", separation=2.0, n_labels=3, dataset="chest")
    out = tmp_path / "out"
    result = probe("--shots", "3", "--seeds", "2", "--cache-dir", str(root), "--out", str(out))
    assert result.exit_code == 0, result.output
    results = pd.read_csv(out / "results.csv")
    mean_auroc = results[results["metric"] == "mean_auroc"]["value"]
    assert len(mean_auroc) == 2 * 3 and (mean_auroc > 0.7).all()
    assert "headline metric: mean_auroc" in (out / "report.md").read_text()


def test_full_budget_chooses_c_on_val_and_uses_one_seed(tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="m", separation=1.0, n_val=60)
    out = tmp_path / "out"
    assert (
        probe(
            "--full",
            "--seeds",
            "5",
            "--methods",
            "logreg",
            "--cache-dir",
            str(root),
            "--out",
            str(out),
        ).exit_code
        == 0
    )
    results = pd.read_csv(out / "results.csv")
    assert set(results["seed"]) == {0} and set(results["budget"]) == {"full"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shots", "0"], "--shots 0: shots must be whole numbers of at least 1"),
        (["--shots", "abc"], "'abc' is not a whole number"),
        (["--fractions", "0.1,x"], "'x' is not a number"),
        (["--shots", "500"], "has "),
        (["--shots", "1", "--models", "strnog"], "did you mean strong"),
        (["--shots", "1", "--datasets", "blob"], "did you mean blobs"),
        (["--shots", "1", "--backend", "gpu"], "--backend 'gpu'"),
        (["--shots", "1", "--methods", "svm"], "--methods svm: choose one or more of"),
        (["--shots", "1", "--methods", ","], "--methods '': choose one or more of"),
        (["--shots", "1", "--jobs", "0"], "--jobs 0: the number of parallel workers"),
        (["--shots", "1", "--knn-k", "0"], "--knn-k 0: every k must be at least 1"),
        (["--shots", "1", "--seeds", "0"], "--seeds 0: must be at least 1"),
        (["--shots", "1", "--cluster", "local:0"], "--cluster 'local:0': expected local:N"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(blob_root, tmp_path, args, message):
    out = tmp_path / "out"
    result = probe(*args, "--cache-dir", str(blob_root), "--out", str(out))
    assert isinstance(result.exception, ToolkitError)
    assert message in cli_message(result.exception, app)
    assert not out.exists()


def test_an_out_that_exists_or_is_a_file_is_refused_before_any_probe_runs(blob_root, tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, message in ((existing, "already exists"), (a_file, "is a file")):
        result = probe("--shots", "1", "--cache-dir", str(blob_root), "--out", str(out))
        assert message in str(result.exception)
    assert (existing / "keep.txt").read_text() == "mine"
    quick = ("--shots", "1", "--seeds", "2", "--bootstrap", "0", "--cache-dir", str(blob_root))
    # overwrite replaces a results folder, never a folder of a user's other files
    result = probe(*quick, "--out", str(existing), "--overwrite")
    assert "holds keep.txt but no run.json" in str(result.exception)
    assert (existing / "keep.txt").read_text() == "mine"
    previous = tmp_path / "previous"
    assert probe(*quick, "--out", str(previous)).exit_code == 0
    (previous / "results.csv").write_text("stale")
    result = probe(*quick, "--out", str(previous), "--overwrite")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(previous / "results.csv")) > 1


def test_empty_cache_root_and_unfinished_stores(tmp_path):
    result = probe("--shots", "1", "--cache-dir", str(tmp_path / "nothing"))
    assert "no complete stores" in str(result.exception)


def test_stores_of_one_dataset_with_different_ids_are_refused(tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="a", separation=1.0)
    write_blob_store(root, model="b", separation=1.0, n_train=150)
    result = probe("--shots", "1", "--cache-dir", str(root))
    assert "disagree on the" in str(result.exception)


def test_corrupt_store_is_named(tmp_path):
    root = tmp_path / "embeddings"
    path = write_blob_store(root, model="a", separation=1.0)
    path.write_bytes(b"garbage")
    result = probe("--shots", "1", "--cache-dir", str(root))
    assert f"{path}: not a store: not a readable HDF5 file" in str(result.exception)


def test_console_script_exits_2_with_a_one_line_error(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from medprobe.probe.cli import main; main()",
            "run",
            "--shots",
            "abc",
            "--cache-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2
    assert "error:" in completed.stderr and "Traceback" not in completed.stderr


def test_library_argument_names_become_the_commands_flags():
    cases = {
        "shots=[0, 5]: shots must be at least 1": "--shots 0,5: shots must be at least 1",
        "knn_k=0: low; or pass allow_fewer=True": "--knn-k 0: low; or pass --allow-fewer",
        "seeds=0: must be at least 1": "--seeds 0: must be at least 1",
        "unknown=3 stays as written": "unknown=3 stays as written",
    }
    for message, expected in cases.items():
        assert cli_message(ToolkitError(message), app) == expected


def test_a_usage_error_is_a_message_and_exit_2_not_a_traceback(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-c", "from medprobe.probe.cli import main; main()", "run", "--nope"],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2
    assert "No such option" in completed.stderr and "Traceback" not in completed.stderr


def test_a_dataset_of_one_class_is_refused_not_scored_perfectly(tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="m", separation=1.0, n_classes=1)
    result = probe("--shots", "1", "--cache-dir", str(root), "--out", str(tmp_path / "out"))
    assert "every training image is of one class ('class0')" in str(result.exception)
    assert not (tmp_path / "out").exists()
