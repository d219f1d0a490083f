"""k-NN and prototypes: the batched torch backend against the one-estimator-at-a-time one, and
the chunked computation against a single pass over every query and support row."""

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from medprobe.probe.fit.backends import EstimatorBackend, ProbeInputs, TorchBackend
from medprobe.probe.fit.neighbors import knn_scores, prototype_scores
from medprobe.probe.fit.protocol import label_inputs


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


def as_sets(data: ProbeInputs, *, whole_pool: bool = False):
    """The pool, and (rows, labels) per support set; with whole_pool, one set of every row."""
    labels = torch.tensor(data.train_labels)
    if whole_pool:
        return torch.tensor(data.train), [(None, labels)]
    rows = [torch.tensor(s) for s in data.supports]
    return torch.tensor(data.train), [(r, labels[r]) for r in rows]


def test_uniform_vote_knn_agrees_with_sklearn_cosine():
    data = inputs()
    pool, sets = as_sets(data)
    scores = knn_scores(pool, sets, torch.tensor(data.test), 4, k=5, vote="majority")
    for (rows, _), ours in zip(sets, scores, strict=True):
        reference = KNeighborsClassifier(n_neighbors=5, metric="cosine").fit(
            data.train[rows.numpy()], data.train_labels[rows.numpy()]
        )
        np.testing.assert_allclose(ours.numpy(), reference.predict_proba(data.test), atol=1e-6)


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


@pytest.mark.parametrize("whole_pool", [False, True])
@pytest.mark.parametrize(("query_chunk", "support_chunk"), [(7, 5), (64, 13), (1, 1000)])
def test_chunked_knn_and_prototypes_equal_one_pass(whole_pool, query_chunk, support_chunk):
    """Tiny chunks force every path: a set split across blocks (running top-k), several sets
    sharing one block, a block smaller than k, and the whole pool read in place."""
    data = inputs(2)
    pool, sets = as_sets(data, whole_pool=whole_pool)
    queries = torch.tensor(data.test)
    one_pass = dict(query_chunk=len(queries), support_chunk=len(pool))
    chunked = dict(query_chunk=query_chunk, support_chunk=support_chunk)
    for vote in ("weighted", "majority"):
        expected = knn_scores(pool, sets, queries, 4, k=10, vote=vote, **one_pass)
        got = knn_scores(pool, sets, queries, 4, k=10, vote=vote, **chunked)
        for ours, reference in zip(got, expected, strict=True):
            torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)
    expected = prototype_scores(pool, sets, queries, 4, **one_pass)
    got = prototype_scores(pool, sets, queries, 4, **chunked)
    for ours, reference in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)


def test_whole_pool_support_equals_the_same_rows_given_by_index():
    data = inputs(3)
    pool, (whole,) = as_sets(data, whole_pool=True)
    every_row = torch.arange(len(pool))
    indexed = (every_row, whole[1])
    queries = torch.tensor(data.test)
    for by_index, in_place in zip(
        knn_scores(pool, [indexed, whole], queries, 4, k=7)[:1],
        knn_scores(pool, [whole], queries, 4, k=7),
        strict=True,
    ):
        torch.testing.assert_close(by_index, in_place)


def test_k_is_capped_by_the_support_size():
    data = inputs()
    tiny = ProbeInputs(**{**data.__dict__, "supports": [np.array([0, 1, 2])]})
    (scores,) = TorchBackend().knn(tiny, k=20, vote="weighted")
    assert np.allclose(scores.sum(1), 1)


def test_multilabel_sets_share_their_rows_and_equal_one_label_at_a_time():
    """Labels of a multi-label store read the same support rows, each leaving out its unknown
    ones (-1): the shared pass gives what each label's own set gives, and scikit-learn's."""
    rng = np.random.default_rng(5)
    data = inputs(5)
    labels = rng.integers(0, 2, (200, 3)).astype(np.int8)
    labels[rng.random(labels.shape) < 0.3] = -1
    multilabel = ProbeInputs(**{**data.__dict__, "train_labels": labels, "n_classes": 2})
    for method in ("knn", "prototype"):
        run = (
            (lambda b, d: b.knn(d, k=5, vote="weighted"))
            if method == "knn"
            else (lambda b, d: b.prototype(d))
        )
        together = run(TorchBackend(), multilabel)
        reference = run(EstimatorBackend("sklearn"), multilabel)
        for column in range(labels.shape[1]):
            alone = run(TorchBackend(), label_inputs(multilabel, column))
            for s in range(len(data.supports)):
                np.testing.assert_allclose(together[s][:, column], alone[s][:, 1], atol=1e-5)
                np.testing.assert_allclose(
                    together[s][:, column], reference[s][:, column], atol=1e-4
                )
    # and chunked: a set split across blocks and rows left out inside each block
    pool, sets = as_sets(multilabel)
    queries = torch.tensor(data.test)
    shared = [(sets[0][0], torch.tensor(labels[data.supports[0], c]).long()) for c in range(3)]
    for scores in (knn_scores, prototype_scores):
        kwargs = dict(k=5) if scores is knn_scores else {}
        one_pass = scores(pool, shared, queries, 2, query_chunk=100, support_chunk=200, **kwargs)
        chunked = scores(pool, shared, queries, 2, query_chunk=9, support_chunk=6, **kwargs)
        for ours, expected in zip(chunked, one_pass, strict=True):
            torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)


def test_a_query_equal_to_a_one_image_class_is_at_distance_zero():
    """SimpleShot's CL2N written directly (centre, normalise, subtract): the expanded
    distance formula cancelled to ~1e-7 there, and its square root made 1.6e-4 of it."""
    rng = np.random.default_rng(8)
    pool = (rng.normal(size=(40, 256)) * np.arange(1, 257) ** -0.5 + 2.0).astype(np.float32)
    labels = np.r_[[0], rng.integers(1, 4, 39)]  # class 0 has one image: row 0
    queries = np.concatenate([pool[:1], pool[5:8], rng.normal(size=(3, 256)) + 2.0])
    queries = queries.astype(np.float32)
    (scores,) = prototype_scores(
        torch.tensor(pool), [(None, torch.tensor(labels))], torch.tensor(queries), 4
    )
    centre = pool.astype(np.float64).mean(0)

    def normalise(values):
        centred = values.astype(np.float64) - centre
        return centred / np.linalg.norm(centred, axis=-1, keepdims=True)

    prototypes = np.stack([normalise(pool[labels == k]).mean(0) for k in range(4)])
    distances = np.linalg.norm(normalise(queries)[:, None] - prototypes[None], axis=2)
    assert distances[0, 0] < 1e-12
    expected = np.exp(-distances) / np.exp(-distances).sum(1, keepdims=True)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=0, atol=2e-7)


def _knn_reference(support, labels, query, k, n_classes):
    """DINO's weighted vote written plainly, with the tie rule made explicit: support rows in
    order of decreasing cosine similarity, the lower row first among equals (a stable sort)."""
    unit = support / np.maximum(np.linalg.norm(support, axis=1, keepdims=True), 1e-12)
    q = query / max(np.linalg.norm(query), 1e-12)
    similarity = (unit @ q).astype(np.float32)
    nearest = sorted(range(len(support)), key=lambda row: (-similarity[row], row))[:k]
    votes = np.zeros(n_classes)
    for row in nearest:
        votes[labels[row]] += np.exp(similarity[row] / 0.07)
    return votes / votes.sum()


@pytest.mark.parametrize("support_chunk,query_chunk", [(1, 1), (3, 2), (4, 5), (1000, 1000)])
def test_ties_go_to_the_lower_support_row_whatever_the_chunk_sizes(support_chunk, query_chunk):
    """An all-zero query ties with every support row; duplicate support rows of different
    labels tie at the k boundary. Both must vote as the stable-order reference does, for every
    chunking (torch.topk alone left these to the kernel and the block boundaries)."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(4, 6)).astype(np.float32)
    support = np.concatenate([base, base[[1, 1, 2]], rng.normal(size=(3, 6)).astype(np.float32)])
    labels = np.array([0, 1, 2, 0, 2, 1, 0, 1, 2, 0])
    queries = np.stack([np.zeros(6, np.float32), base[1], base[2] * 2.0, base[0] + base[1]])
    pool = torch.tensor(support)
    ours = knn_scores(
        pool,
        [(None, torch.tensor(labels))],
        torch.tensor(queries),
        3,
        k=3,
        support_chunk=support_chunk,
        query_chunk=query_chunk,
    )[0].numpy()
    for query, row in zip(queries, ours, strict=True):
        np.testing.assert_allclose(row, _knn_reference(support, labels, query, 3, 3), atol=1e-6)
