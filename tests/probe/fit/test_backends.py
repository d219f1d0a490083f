"""How C is chosen: held-out log-loss (as scikit-learn's), near-ties to the stronger penalty; the
full-budget and multi-label solves against scikit-learn; fits that do not converge say so."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss as sklearn_log_loss
from sklearn.preprocessing import StandardScaler

from medprobe.probe.fit.backends import (
    EstimatorBackend,
    ProbeInputs,
    TorchBackend,
    best_c,
    log_loss,
)
from medprobe.probe.fit.logistic import C_GRID


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
    with caplog.at_level("WARNING", logger="medprobe.probe.fit.protocol"):
        (ours,) = TorchBackend().logreg(data)
    assert "no val split" in caplog.text
    (theirs,) = EstimatorBackend("sklearn").logreg(data)
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.95


def separable(n_rows: int, dim: int, n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_rows)
    latent = rng.normal(size=(n_rows, dim)) + 0.7 * rng.normal(size=(n_classes, dim))[labels]
    mixing = (np.arange(1, dim + 1) ** -0.5)[:, None] * np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    return (latent @ mixing + 2.0).astype(np.float32), labels


def full_inputs(labels, features, *, with_val: bool = True) -> ProbeInputs:
    """Train rows 0-399 (shuffled order, as a store not sorted by id), val 400-499, test 500+."""
    order = np.random.default_rng(9).permutation(400)
    return ProbeInputs(
        train=features[:400],
        train_labels=labels[:400],
        supports=[order],
        seeds=[0],
        test=features[500:],
        n_classes=int(labels.max()) + 1 if labels.ndim == 1 else 2,
        val=features[400:500] if with_val else None,
        val_labels=labels[400:500] if with_val else None,
        use_val=True,
    )


def newton_optimum(features: np.ndarray, labels: np.ndarray, c: float) -> np.ndarray:
    """Test probabilities (rows 500+) of the optimum on train rows 0-399 at C, by scikit-learn's
    Newton solver at tol 1e-10 in float64 (its lbfgs stops on its own ftol first)."""
    train = features[:400].astype(np.float64)
    scaler = StandardScaler().fit(train)
    model = LogisticRegression(C=c, max_iter=10_000, tol=1e-10, solver="newton-cholesky")
    model.fit(scaler.transform(train), labels[:400])
    return model.predict_proba(scaler.transform(features[500:].astype(np.float64)))


@pytest.mark.parametrize("n_classes", [3, 2])
def test_full_budget_equals_sklearn_at_the_c_it_chooses_on_val(n_classes):
    """The full-budget solve picks C as the naive loop does, and its final model is sklearn's
    LogisticRegression(C) on StandardScaler-ed train rows."""
    features, labels = separable(700, 20, n_classes)
    data = full_inputs(labels, features)
    backend = TorchBackend()
    (ours,) = backend.logreg(data)
    (report,) = backend.fit_reports
    reference_backend = EstimatorBackend("sklearn")
    (theirs,) = reference_backend.logreg(data)
    assert report.c == reference_backend.fit_reports[0].c
    # A small train split is solved in float64 to the optimum: scikit-learn's Newton solver at
    # tol 1e-10; sklearn's default fits (the naive loop) stop at their own 1e-4.
    assert report.converged and report.max_gradient < 1e-9
    np.testing.assert_allclose(ours, newton_optimum(features, labels, report.c), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours, theirs, atol=2e-2)
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.99


@pytest.mark.parametrize(("n_classes", "with_val"), [(3, True), (2, True), (3, False)])
def test_a_large_full_budget_is_polished_to_sklearns_optimum_whatever_the_threads(
    n_classes, with_val, monkeypatch
):
    """Above FLOAT64_ELEMENTS the grid is solved in float32 to sklearn's 1e-4 criterion, whose
    stopping point depends on the rounding of the products; the kept fit is then polished in
    float64, so it is sklearn's tol=1e-10 optimum at the chosen C, and the same on 1 or 2
    threads."""
    import torch

    from medprobe.probe.fit import full_budget, full_logistic

    monkeypatch.setattr(full_budget, "FLOAT64_ELEMENTS", 0)  # every store counts as large
    monkeypatch.setattr(full_logistic, "FLOAT64_ELEMENTS", 0)
    features, labels = separable(700, 20, n_classes)
    data = full_inputs(labels, features, with_val=with_val)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            backend = TorchBackend()
            (scores,) = backend.logreg(data)
            runs.append((scores, backend.fit_reports[0]))
    finally:
        torch.set_num_threads(threads)
    (ours, report), (other_threads, _) = runs
    assert report.converged and report.max_gradient < 1e-9
    np.testing.assert_allclose(ours, newton_optimum(features, labels, report.c), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours, other_threads, atol=1e-9)


def test_full_budget_without_val_chooses_c_by_the_same_folds_as_sklearn():
    features, labels = separable(700, 12, 3, seed=1)
    data = full_inputs(labels, features, with_val=False)
    fast, reference = TorchBackend(), EstimatorBackend("sklearn")
    (ours,) = fast.logreg(data)
    (theirs,) = reference.logreg(data)
    assert fast.fit_reports[0].c == reference.fit_reports[0].c
    np.testing.assert_allclose(ours, theirs, atol=1e-2)


def multilabel_data(n_rows: int = 700, n_labels: int = 3, seed: int = 2):
    """Binary labels driven by the features, a third of them unknown (-1)."""
    rng = np.random.default_rng(seed)
    features, _ = separable(n_rows, 16, 2, seed=seed)
    signal = features @ rng.normal(size=(16, n_labels))
    labels = (signal + rng.normal(size=signal.shape) > np.median(signal, 0)).astype(np.int8)
    labels[rng.random(labels.shape) < 0.3] = -1
    return features, labels


@pytest.mark.parametrize("budget", ["few-shot", "full"])
def test_batched_multilabel_equals_one_fit_per_label(budget):
    """All labels in one solve give each label what scikit-learn gives label by label; at the
    full budget also what its own binary fit gives (torch, one label at a time); few-shot, what
    one scaler on the support and one LogisticRegression on the label's known rows give at the
    chosen C (the labels share the support's rows and folds, see probe.protocol)."""
    features, labels = multilabel_data()
    if budget == "full":
        data = full_inputs(labels, features)
    else:
        rng = np.random.default_rng(3)
        supports = [np.sort(rng.choice(400, 40, replace=False)) for _ in range(2)]
        data = ProbeInputs(
            train=features[:400],
            train_labels=labels[:400],
            supports=supports,
            seeds=[0, 1],
            test=features[500:],
            n_classes=2,
        )
    batched = TorchBackend()
    together = batched.logreg(data)
    n_labels = labels.shape[1]
    assert [r.label for r in batched.fit_reports] == list(range(n_labels)) * len(data.supports)
    reference = EstimatorBackend("sklearn").logreg(data)
    if budget == "few-shot":
        for report in batched.fit_reports:
            at = data.seeds.index(report.seed)
            support = data.supports[at]
            values = data.train_labels[support, report.label]
            scaler = StandardScaler().fit(data.train[support])
            plain = LogisticRegression(C=report.c, tol=1e-10, max_iter=10_000).fit(
                scaler.transform(data.train[support][values >= 0]), values[values >= 0]
            )
            ours = together[at][:, report.label]
            # float32 L-BFGS stops where the objective no longer moves in float32 (about 1e-6),
            # a few 1e-3 in probability from scikit-learn's float64 optimum on 40 rows
            np.testing.assert_allclose(
                ours, plain.predict_proba(scaler.transform(data.test))[:, 1], atol=5e-3
            )
            np.testing.assert_allclose(ours, reference[at][:, report.label], atol=1e-2)
        return
    for column in range(labels.shape[1]):
        train_column = data.train_labels[:, column]
        val_known = None if data.val is None else data.val_labels[:, column] >= 0
        alone = ProbeInputs(
            train=data.train,
            train_labels=np.clip(train_column, 0, 1).astype(np.int64),
            supports=[s[train_column[s] >= 0] for s in data.supports],
            seeds=data.seeds,
            test=data.test,
            n_classes=2,
            val=None if val_known is None else data.val[val_known],
            val_labels=None if val_known is None else data.val_labels[val_known, column],
            use_val=data.use_val,
        )
        for seed_index, single in enumerate(TorchBackend().logreg(alone)):
            np.testing.assert_allclose(together[seed_index][:, column], single[:, 1], atol=2e-3)
            np.testing.assert_allclose(
                together[seed_index][:, column], reference[seed_index][:, column], atol=1e-2
            )


def test_a_fit_that_runs_out_of_iterations_is_reported_and_warned_about(
    tmp_path, monkeypatch, caplog
):
    from functools import partialmethod

    from medprobe.probe.run.settings import ProbeSettings
    from medprobe.probe.run.supports import draw_supports
    from medprobe.probe.run.sweep import run_sweep
    from medprobe.probe.targets import select_targets
    from tests.probe.conftest import write_blob_store

    root = tmp_path / "embeddings"
    write_blob_store(root, model="m", separation=1.0, n_val=60)
    monkeypatch.setattr(TorchBackend, "logreg", partialmethod(TorchBackend.logreg, max_iter=1))
    targets = select_targets(root)
    config = ProbeSettings(shots=[5], full=True, seeds=2, methods=("logreg",))
    reports = []
    with caplog.at_level("WARNING", logger="medprobe.probe.run.sweep"):
        run_sweep(targets, draw_supports(targets, config), config, on_fit_reports=reports.extend)
    assert len(reports) == 2 + 1  # two seeds of 5-shot, one full fit
    assert all(r["stop"] == "max_iter" and not r["converged"] for r in reports)
    assert {r["budget"] for r in reports} == {"5-shot", "full"}
    assert reports[-1]["iterations"] == 1 and reports[-1]["max_gradient"] > 1e-4
    warned = [m for m in caplog.messages if "did not converge" in m]
    assert len(warned) == 3 and "blobs / m / pooling cls / full / seed 0" in warned[-1]


def test_fit_reports_of_a_multilabel_store_name_its_labels(tmp_path):
    from medprobe.probe.run.settings import ProbeSettings
    from medprobe.probe.run.supports import draw_supports
    from medprobe.probe.run.sweep import run_sweep
    from medprobe.probe.targets import select_targets
    from tests.probe.conftest import write_blob_store

    root = tmp_path / "embeddings"
    write_blob_store(root, model="m", separation=2.0, n_labels=3, dataset="chest", n_val=40)
    targets = select_targets(root)
    config = ProbeSettings(shots=[3], full=True, seeds=2, methods=("logreg",))
    reports = []
    run_sweep(targets, draw_supports(targets, config), config, on_fit_reports=reports.extend)
    names = ["finding0", "finding1", "finding2"]

    def fits(budget):
        return sorted((r["seed"], r["label"]) for r in reports if r["budget"] == budget)

    assert fits("3-shot") == [(s, n) for s in (0, 1) for n in names]
    assert fits("full") == [(0, n) for n in names]
    assert all(r["converged"] and r["c"] in C_GRID for r in reports)
