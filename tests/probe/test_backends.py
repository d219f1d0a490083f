"""How C is chosen: held-out log-loss (as scikit-learn's), near-ties to the stronger penalty."""

import numpy as np
import pytest
from sklearn.metrics import log_loss as sklearn_log_loss

from medprobe.probe.backends import EstimatorBackend, ProbeInputs, TorchBackend, best_c, log_loss
from medprobe.probe.logistic import C_GRID


def test_log_loss_equals_sklearn():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(4), 50)
    labels = rng.integers(0, 4, 50)
    assert log_loss(probabilities, labels) == pytest.approx(
        sklearn_log_loss(labels, probabilities, labels=range(4))
    )


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        ([0.9, 0.5, 0.4, 0.45, 0.6, 0.7], C_GRID[2]),
        ([0.4, 0.4, 0.4, 0.4, 0.4, 0.4], C_GRID[0]),  # a flat grid: the strongest penalty
        ([0.9, 0.3 + 1e-9, 0.3, 0.5, 0.6, 0.7], C_GRID[1]),  # a near-tie: the smaller C
    ],
)
def test_best_c_takes_the_lowest_loss_and_breaks_ties_towards_smaller_c(losses, expected):
    assert best_c(losses) == expected


def test_full_budget_without_val_falls_back_to_cross_validation_and_says_so(caplog):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 90)
    features = (rng.normal(size=(90, 6)) + 2 * rng.normal(size=(3, 6))[labels]).astype(np.float32)
    data = ProbeInputs(
        train=features[:60],
        train_labels=labels[:60],
        supports=[np.arange(60)],
        seeds=[0],
        test=features[60:],
        n_classes=3,
        use_val=True,
    )
    with caplog.at_level("WARNING", logger="medprobe.probe.backends"):
        (ours,) = TorchBackend().logreg(data)
    assert "no val split" in caplog.text
    (theirs,) = EstimatorBackend("sklearn").logreg(data)
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.95
