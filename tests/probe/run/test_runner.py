"""`mp.probe` is the run: its Results save exactly the folder `probe run --out` writes."""

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medprobe.cache import ToolkitError
from medprobe.probe.cli import app
from medprobe.probe.run.results import Results
from medprobe.probe.run.runner import probe
from medprobe.probe.stats.metrics import single_label_metrics
from medprobe.probe.stats.predictions import PREDICTIONS_FILE, Predictions, escape_name
from tests.probe.conftest import write_blob_store

SETTINGS = {"shots": [1, 4], "full": True, "seeds": 3}


def test_library_save_and_cli_out_give_identical_results(blob_root, tmp_path):
    results = probe(blob_root, **SETTINGS, progress=False)
    results.save(tmp_path / "library")
    arguments = ["--shots", "1,4", "--full", "--seeds", "3", "--cache-dir", str(blob_root)]
    cli = CliRunner().invoke(app, ["run", *arguments, "--out", str(tmp_path / "cli")])
    assert cli.exit_code == 0, cli.output
    for name in ("results.csv", "summary.csv", "paired.csv", "supports.json"):
        assert (tmp_path / "library" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    assert {p.name for p in (tmp_path / "library").iterdir()} == {
        p.name for p in (tmp_path / "cli").iterdir()
    }


def test_a_saved_folder_loads_back_to_the_same_tables(blob_root, tmp_path):
    results = probe(blob_root, **SETTINGS, progress=False)
    results.save(tmp_path / "run")
    loaded = Results.load(tmp_path / "run")
    pd.testing.assert_frame_equal(loaded.frame, results.frame, check_dtype=False)
    pd.testing.assert_frame_equal(
        loaded.summary(), results.summary(), check_dtype=False, atol=1e-12
    )
    assert loaded.run == results.run and loaded.supports == results.supports
    figure = loaded.plot("blobs")
    assert [axis.get_title() for axis in figure.axes] == ["knn", "logreg", "prototype"]


def test_library_errors_name_arguments_and_come_before_any_work(blob_root, tmp_path):
    cases = [
        ({"shots": [0]}, "shots"),
        ({"shots": [1], "seeds": 0}, "seeds"),
        ({"shots": [1], "methods": "svm"}, "methods"),
        ({"shots": [1], "jobs": 0}, "jobs"),
        ({"shots": [1], "cluster": "somewhere"}, "cluster"),
        ({"shots": [1], "out": blob_root}, "out"),  # exists
    ]
    for arguments, name in cases:
        with pytest.raises(ToolkitError) as raised:
            probe(blob_root, progress=False, **arguments)
        assert raised.value.argument == name
        assert str(raised.value).startswith(f"{name}=")
    with pytest.raises(ToolkitError, match="dataset='nope': not in these results") as raised:
        probe(blob_root, shots=1, seeds=2, progress=False).plot("nope")
    assert raised.value.argument == "dataset"


def test_saved_predictions_reproduce_the_metrics_whatever_the_store_row_order(tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="ordered", separation=1.5)
    write_blob_store(root, model="shuffled", separation=1.5, shuffle_rows=True)
    results = probe(root, shots=[2], full=True, seeds=2, save_predictions=True, progress=False)
    results.save(tmp_path / "run")
    with h5py.File(tmp_path / "run" / PREDICTIONS_FILE, "r") as handle:
        ids = [i.decode() for i in handle["blobs/ids"][()]]
        labels = handle["blobs/labels"][()]
        scores = handle["blobs/shuffled/cls/logreg/2-shot/seed1/scores"][()]
    assert ids == sorted(ids) and scores.dtype == np.float32 and scores.shape == (100, 3)
    expected = results.frame.query(
        "model == 'shuffled' and method == 'logreg' and budget == '2-shot' and seed == 1"
    ).set_index("metric")["value"]
    for metric, value in single_label_metrics(labels, scores, "multiclass").items():
        assert value == pytest.approx(expected[metric], abs=1e-6)
    loaded = Predictions.load(tmp_path / "run" / PREDICTIONS_FILE)
    assert np.array_equal(
        loaded.scores("blobs", "shuffled", "cls", "logreg", "2-shot", 1),
        results.predictions.scores("blobs", "shuffled", "cls", "logreg", "2-shot", 1),
    )


def test_a_slash_in_a_model_name_is_escaped_in_predictions():
    assert escape_name("timm:org/model") == "timm:org%2Fmodel"
    assert escape_name("50%/x") == "50%25%2Fx"


@pytest.mark.slow
def test_a_local_dask_cluster_gives_the_rows_of_a_local_run(blob_root):
    pytest.importorskip("distributed")
    local = probe(blob_root, shots=[2], seeds=2, progress=False)
    on_dask = probe(blob_root, shots=[2], seeds=2, cluster="local:2", progress=False)
    pd.testing.assert_frame_equal(local.frame, on_dask.frame)


def test_run_json_lists_every_fit_that_ran_out_of_iterations(blob_root, tmp_path, monkeypatch):
    import json
    from functools import partialmethod

    from medprobe.probe.fit.backends import TorchBackend

    converged = probe(blob_root, shots=[4], seeds=2, methods="logreg", progress=False)
    fits = converged.run["logistic_regression_fits"]
    assert fits["final_fits"] == 2 * 2 and fits["not_converged"] == []  # 2 stores x 2 seeds
    monkeypatch.setattr(TorchBackend, "logreg", partialmethod(TorchBackend.logreg, max_iter=1))
    probe(blob_root, shots=[4], seeds=2, methods="logreg", progress=False, out=tmp_path / "run")
    fits = json.loads((tmp_path / "run" / "run.json").read_text())["logistic_regression_fits"]
    assert len(fits["not_converged"]) == 4
    assert {(f["model"], f["seed"], f["stop"]) for f in fits["not_converged"]} == {
        (model, seed, "max_iter") for model in ("strong", "weak") for seed in (0, 1)
    }
    assert all(f["iterations"] == 1 and f["max_gradient"] > 0 for f in fits["not_converged"])
