"""The batched solver minimises scikit-learn's objective: same predictions on the same data."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from medprobe.probe.fit.full_logistic import fit_heads
from medprobe.probe.fit.logistic import LinearProblem, fit_logistic


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


@pytest.mark.parametrize("n_classes", [2, 3])
def test_a_batch_equals_its_problems_solved_one_by_one(n_classes):
    """Problems that stop at very different steps (a strong and a weak penalty, few and many
    rows): the batch evaluates only the rectangle of those still moving, which must change no
    problem's result."""
    features, labels = blobs(300, 24, n_classes)
    rng = np.random.default_rng(1)
    problems = [
        LinearProblem(rows, labels[rows], c)
        for rows in (rng.choice(300, n_rows, replace=False) for n_rows in (12, 30, 60))
        for c in (0.01, 1.0, 100.0)
    ]
    pool = torch.tensor(features)
    fit = fit_logistic(pool, problems, n_classes)
    assert fit.iterations.max() > 2 * fit.iterations.min()  # the rectangle did shrink
    batched = fit.logits(pool)
    for b, problem in enumerate(problems):
        alone = fit_logistic(pool, [problem], n_classes).logits(pool)[0]
        torch.testing.assert_close(
            torch.softmax(batched[b], 1), torch.softmax(alone, 1), atol=1e-7, rtol=0
        )


def test_constant_feature_does_not_break_standardisation():
    features, labels = blobs(100, 8, 2)
    features[:, 3] = 7.0
    rows = np.arange(50)
    fit = fit_logistic(torch.tensor(features), [LinearProblem(rows, labels[rows], 1.0)], 2)
    assert torch.isfinite(fit.weights).all()


def conditioned(n_rows: int, dim: int, n_classes: int, seed: int = 0):
    """Class blobs mixed through a random basis with singular values k^-0.5 and offset from 0,
    as real embeddings are: hard for an unpreconditioned solver, and a test of centring."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_rows)
    latent = rng.normal(size=(n_rows, dim)) + 0.5 * rng.normal(size=(n_classes, dim))[labels]
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    mixing = (np.arange(1, dim + 1) ** -0.5)[:, None] * basis
    return (latent @ mixing + 3.0).astype(np.float32), labels


@pytest.mark.parametrize("n_classes", [4, 2])
def test_every_c_of_one_solve_matches_sklearn(n_classes):
    features, labels = conditioned(600, 24, n_classes)
    features[:, 5] = 1.5  # constant: sklearn leaves it at scale 1, so it gets weight 0
    grid = (0.01, 1.0, 100.0)
    fit = fit_heads(
        torch.tensor(features),
        torch.tensor(labels)[:, None],
        None,
        grid,
        n_classes=n_classes,
        max_iter=300,
        tolerance_grad=1e-6,
    )
    ours = fit.probabilities(torch.tensor(features[:200]), range(len(grid))).numpy()
    for g, c in enumerate(grid):
        reference = sklearn_probabilities(features, labels, np.arange(600), c, features[:200])
        np.testing.assert_allclose(ours[:, g], reference, atol=2e-3)


def test_masked_heads_match_sklearn_on_their_own_rows():
    """Each head (a label, or a fold) is standardised and fitted on its own rows only."""
    rng = np.random.default_rng(4)
    features, _ = conditioned(500, 16, 2, seed=4)
    targets = (features[:, :3] + rng.normal(size=(500, 3)) > 3.0).astype(np.int64)
    known = rng.random((500, 3)) > 0.3
    grid = (0.1, 10.0)
    fit = fit_heads(
        torch.tensor(features),
        torch.tensor(targets),
        torch.tensor(known),
        grid,
        n_classes=2,
        max_iter=300,
        tolerance_grad=1e-6,
    )
    ours = fit.probabilities(torch.tensor(features), range(len(grid) * 3)).numpy()
    for g, c in enumerate(grid):
        for head in range(3):
            rows = np.flatnonzero(known[:, head])
            reference = sklearn_probabilities(features, targets[:, head], rows, c, features)
            np.testing.assert_allclose(ours[:, g * 3 + head], reference, atol=2e-3)


def test_a_solve_that_runs_out_of_iterations_says_so():
    features, labels = conditioned(300, 16, 3)
    fit = fit_heads(
        torch.tensor(features),
        torch.tensor(labels)[:, None],
        None,
        (1.0,),
        n_classes=3,
        max_iter=2,
        tolerance_grad=1e-6,
    )
    assert fit.minimum.reason(0) == "max_iter" and int(fit.minimum.iterations[0]) == 2
    assert float(fit.minimum.gradient_size[0]) > 1e-6
    few_shot = fit_logistic(
        torch.tensor(features), [LinearProblem(np.arange(30), labels[:30], 1.0)], 3, max_iter=1
    )
    assert few_shot.reached_max_iter().tolist() == [True]


@pytest.mark.parametrize(
    ("n_support", "dim", "n_classes", "c"),
    [
        (10, 64, 2, 100.0),  # 5 shots, near-separable: weakly regularised
        (25, 64, 5, 1.0),
        (50, 32, 3, 100.0),
        (40, 32, 2, 100.0),
        (200, 16, 4, 10.0),  # more rows than features
        (20, 64, 2, 1e-4),
    ],
)
def test_few_shot_fits_reach_the_optimum(n_support, dim, n_classes, c):
    """Within 1e-6 in probability of scikit-learn at tol=1e-10 on ill-conditioned features.

    The reference is scikit-learn's Newton solver: its lbfgs at tol=1e-10 stops on its own
    ftol (64·eps of the value) first, and is itself up to 9e-6 from the optimum at C=100."""
    features, labels = conditioned(400, dim, n_classes, seed=n_support)
    rows = np.arange(n_support)
    fit = fit_logistic(torch.tensor(features), [LinearProblem(rows, labels[rows], c)], n_classes)
    ours = torch.softmax(fit.logits(torch.tensor(features[300:]))[0], 1).numpy()
    scaler = StandardScaler().fit(features[rows].astype(np.float64))
    reference = LogisticRegression(C=c, tol=1e-10, max_iter=100_000, solver="newton-cholesky").fit(
        scaler.transform(features[rows].astype(np.float64)), labels[rows]
    )
    expected = reference.predict_proba(scaler.transform(features[300:].astype(np.float64)))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    assert float(fit.gradient_size[0]) <= 1e-10 or fit.stop.tolist() == [1]
