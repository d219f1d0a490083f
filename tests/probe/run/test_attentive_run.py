"""`methods="attentive"` in a run: its rows, intervals, paired tests, predictions and report as
any other method's, the same numbers on any number of workers, a clear refusal without tokens."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medprobe.cache import ToolkitError
from medprobe.cache.console import cli_message
from medprobe.probe.cli import app
from medprobe.probe.run.runner import probe
from tests.probe.conftest import write_blob_store

STORE = {"n_train": 90, "n_val": 30, "n_test": 45, "dim": 8, "tokens": 3, "token_signal": "one"}


@pytest.fixture(scope="module")
def token_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens") / "embeddings"
    write_blob_store(root, model="strong", separation=3.0, **STORE)
    write_blob_store(root, model="weak", separation=0.5, **STORE)
    return root


@pytest.fixture(scope="module")
def attentive_run(token_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    options = {"shots": [3], "full": True, "seeds": 2, "methods": "attentive,logreg"}
    return probe(token_root, **options, save_predictions=True, out=out, progress=False), out


def test_attentive_is_a_method_in_every_output(attentive_run):
    results, out = attentive_run
    frame = results.frame
    attentive = frame[frame.method == "attentive"]
    assert set(attentive.budget) == {"3-shot", "full"}
    assert set(attentive.model) == {"strong", "weak"}
    assert set(attentive[attentive.budget == "3-shot"].seed) == {0, 1}
    assert "attentive" in set(results.summary().method)
    paired = pd.read_csv(out / "paired.csv")
    assert "attentive" in set(paired.method)
    scores = results.predictions.scores("blobs", "strong", "cls", "attentive", "full", 0)
    assert scores.shape == (45, 3) and np.allclose(scores.sum(1), 1.0, atol=1e-5)
    assert "attentive" in (out / "report.md").read_text()
    strong = attentive[(attentive.model == "strong") & (attentive.metric == "accuracy")]
    weak = attentive[(attentive.model == "weak") & (attentive.metric == "accuracy")]
    assert strong.value.mean() > weak.value.mean()


@pytest.mark.slow
def test_workers_give_the_numbers_of_a_plain_run(token_root, attentive_run):
    results, _ = attentive_run
    options = {"shots": [3], "full": True, "seeds": 2, "methods": "attentive,logreg"}
    on_two = probe(token_root, **options, jobs=2, progress=False)
    pd.testing.assert_frame_equal(results.frame, on_two.frame)


@pytest.mark.slow
def test_a_local_dask_cluster_gives_the_numbers_of_a_plain_run(token_root, attentive_run):
    pytest.importorskip("distributed")
    results, _ = attentive_run
    options = {"shots": [3], "full": True, "seeds": 2, "methods": "attentive,logreg"}
    on_dask = probe(token_root, **options, cluster="local:2", progress=False)
    pd.testing.assert_frame_equal(results.frame, on_dask.frame)


def test_multilabel_stores_train_one_attentive_head_per_label(tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="m", separation=2.0, n_labels=3, **STORE)
    frame = probe(root, shots=[4], seeds=1, methods="attentive", progress=False).frame
    assert "mean_auroc" in set(frame.metric) and set(frame.method) == {"attentive"}
    assert frame[frame.metric == "mean_auroc"].value.notna().all()


def test_stores_without_tokens_are_refused_by_name(tmp_path, token_root):
    root = tmp_path / "embeddings"
    path = write_blob_store(root, model="plain", separation=2.0)
    with pytest.raises(ToolkitError, match=f"{path.name}.*extract run --tokens 8"):
        probe(root, shots=[2], seeds=1, methods="attentive", progress=False)
    result = CliRunner().invoke(
        app, ["run", "--shots", "2", "--methods", "attentive", "--cache-dir", str(root)]
    )
    assert isinstance(result.exception, ToolkitError)
    assert "--methods" in cli_message(result.exception, app)  # exits 2 through run_app
    assert not (tmp_path / "probe-runs").exists()
