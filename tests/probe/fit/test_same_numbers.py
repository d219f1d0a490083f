"""A probe's numbers do not depend on threads, workers or cluster (issue 23).

The logistic-regression fits are solved in float64 to a gradient of 1e-10 (few-shot, and a full
budget of this size), so what is left between thread counts is the rounding of float64 products
summed in another order: about 1e-12 in a probability, far below the float32 the scores are
stored in, but not always bit-identical (a score on a float32 rounding boundary may round either
way, 6e-8). Hence 1e-6, not equality, on every metric and score.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medprobe.probe.run.results import Results
from medprobe.probe.run.runner import probe
from tests.probe.conftest import write_blob_store

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = dict(full=True, methods="logreg", bootstrap=0, save_predictions=True, progress=False)
ONE_THREAD = """
import sys, torch
torch.set_num_threads(1)
from medprobe.probe.run.runner import probe
probe(sys.argv[1], out=sys.argv[2], full=True, methods="logreg", bootstrap=0,
      save_predictions=True, progress=False)
"""


@pytest.fixture
def hard_root(tmp_path) -> Path:
    """200 train / 45 test in 384 dims (wide enough for torch's products to use threads),
    ill-conditioned: fits stopped at a gradient of 1e-4 gave log loss 1.4e-4 apart between one
    thread and two here."""
    root = tmp_path / "embeddings"
    for model, separation in (("near-separable", 1.0), ("overlapping", 0.3)):
        write_blob_store(
            root, model=model, separation=separation, n_train=200, n_test=45, dim=384,
            spectrum=0.5,
        )  # fmt: skip
    return root


def assert_same(first: Results, second: Results) -> None:
    keys = ["dataset", "model", "pooling", "method", "budget", "seed", "metric"]
    a, b = (r.frame.sort_values(keys).reset_index(drop=True) for r in (first, second))
    pd.testing.assert_frame_equal(a.drop(columns="value"), b.drop(columns="value"))
    np.testing.assert_allclose(a["value"], b["value"], rtol=0, atol=1e-6)
    for dataset, part in first.predictions:
        other = second.predictions.datasets[dataset]
        assert part.scores.keys() == other.scores.keys()
        for key, scores in part.scores.items():
            np.testing.assert_allclose(scores, other.scores[key], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_plain_two_jobs_and_one_thread_give_the_same_numbers(hard_root, tmp_path):
    plain = probe(hard_root, **SETTINGS)
    assert {"log_loss", "ece", "brier"} <= set(plain.frame["metric"])
    assert_same(plain, probe(hard_root, jobs=2, **SETTINGS))
    out = tmp_path / "one-thread"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-c", ONE_THREAD, str(hard_root), str(out)], env=env, cwd=ROOT, check=True
    )
    assert_same(plain, Results.load(out))


@pytest.mark.slow
def test_a_local_dask_cluster_gives_the_same_numbers(hard_root):
    pytest.importorskip("distributed")
    assert_same(probe(hard_root, **SETTINGS), probe(hard_root, cluster="local:2", **SETTINGS))
