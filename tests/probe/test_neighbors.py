"""k-NN and prototypes: the batched torch backend against the one-estimator-at-a-time one."""

import numpy as np
import torch
from sklearn.neighbors import KNeighborsClassifier

from medprobe.probe.backends import EstimatorBackend, ProbeInputs, TorchBackend
from medprobe.probe.neighbors import knn_scores


def inputs(seed: int = 0) -> ProbeInputs:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 300)
    features = (rng.normal(size=(300, 12)) + 2 * rng.normal(size=(4, 12))[labels]).astype(
        np.float32
    )
    supports = [np.sort(rng.choice(200, 40, replace=False)) for _ in range(3)]
    return ProbeInputs(
        train=features[:200],
        train_labels=labels[:200],
        supports=supports,
        seeds=[0, 1, 2],
        test=features[200:],
        n_classes=4,
    )


def test_uniform_vote_knn_agrees_with_sklearn_cosine():
    data = inputs()
    support = data.supports[0]
    (scores,) = knn_scores(
        [(torch.tensor(data.train[support]), torch.tensor(data.train_labels[support]))],
        torch.tensor(data.test),
        4,
        k=5,
        vote="majority",
    )
    reference = KNeighborsClassifier(n_neighbors=5, metric="cosine").fit(
        data.train[support], data.train_labels[support]
    )
    np.testing.assert_allclose(scores.numpy(), reference.predict_proba(data.test), atol=1e-6)


def test_backends_agree_on_weighted_knn_and_prototypes():
    data = inputs(1)
    fast, reference = TorchBackend(), EstimatorBackend("sklearn")
    for ours, theirs in zip(
        fast.knn(data, k=10, vote="weighted"),
        reference.knn(data, k=10, vote="weighted"),
        strict=True,
    ):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
    for ours, theirs in zip(fast.prototype(data), reference.prototype(data), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_backends_agree_on_logistic_regression_with_cv():
    data = inputs(2)
    ours = TorchBackend().logreg(data)
    theirs = EstimatorBackend("sklearn").logreg(data)
    for a, b in zip(ours, theirs, strict=True):
        assert (a.argmax(1) == b.argmax(1)).mean() >= 0.97


def test_k_is_capped_by_the_support_size():
    data = inputs()
    tiny = ProbeInputs(**{**data.__dict__, "supports": [np.array([0, 1, 2])]})
    (scores,) = TorchBackend().knn(tiny, k=20, vote="weighted")
    assert np.allclose(scores.sum(1), 1)
