"""The batched solver minimises scikit-learn's objective: same predictions on the same data."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from medprobe.probe.logistic import LinearProblem, fit_logistic


def blobs(n_rows: int, dim: int, n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_rows)
    features = rng.normal(size=(n_rows, dim)) + 1.5 * rng.normal(size=(n_classes, dim))[labels]
    return features.astype(np.float32), labels


def sklearn_probabilities(features, labels, rows, c, queries):
    scaler = StandardScaler().fit(features[rows])
    model = LogisticRegression(C=c, max_iter=1000, tol=1e-8).fit(
        scaler.transform(features[rows]), labels[rows]
    )
    return model.predict_proba(scaler.transform(queries))


@pytest.mark.parametrize(
    ("n_support", "dim", "n_classes", "c"),
    [
        (30, 64, 3, 0.1),  # fewer rows than features: the dual path
        (30, 64, 3, 1.0),
        (200, 16, 4, 0.5),  # more rows than features: the primal path
        (40, 32, 2, 0.3),
    ],  # binary: must equal sklearn's binomial model, not a plain softmax
)
def test_matches_sklearn_on_the_same_support_and_c(n_support, dim, n_classes, c):
    features, labels = blobs(400, dim, n_classes)
    rows = np.arange(n_support)
    fit = fit_logistic(
        torch.tensor(features), [LinearProblem(rows, labels[rows], c)], n_classes, max_iter=500
    )
    ours = torch.softmax(fit.logits(torch.tensor(features[300:]))[0], 1).numpy()
    reference = sklearn_probabilities(features, labels, rows, c, features[300:])
    np.testing.assert_allclose(ours, reference, atol=2e-3)


def test_a_batch_equals_its_problems_solved_one_by_one():
    features, labels = blobs(300, 24, 3)
    rng = np.random.default_rng(1)
    problems = [
        LinearProblem(rows, labels[rows], c)
        for rows in (rng.choice(300, n_rows, replace=False) for n_rows in (12, 30, 60))
        for c in (0.01, 0.1)
    ]
    pool = torch.tensor(features)
    batched = fit_logistic(pool, problems, 3, max_iter=500).logits(pool)
    for b, problem in enumerate(problems):
        alone = fit_logistic(pool, [problem], 3, max_iter=500).logits(pool)[0]
        torch.testing.assert_close(
            torch.softmax(batched[b], 1), torch.softmax(alone, 1), atol=2e-3, rtol=0
        )


def test_constant_feature_does_not_break_standardisation():
    features, labels = blobs(100, 8, 2)
    features[:, 3] = 7.0
    rows = np.arange(50)
    fit = fit_logistic(torch.tensor(features), [LinearProblem(rows, labels[rows], 1.0)], 2)
    assert torch.isfinite(fit.weights).all()
