"""Retrieval's precision@k, mAP@R and majority vote against the definitions written plainly
(a full sort per query), chunked or not; and end to end, against the run's support sets."""

import numpy as np
import pytest
import torch

import medprobe as mp
from medprobe.cache import open_store
from medprobe.probe.fit import retrieval
from medprobe.probe.fit.retrieval import retrieval_per_query
from medprobe.probe.stats.retrieval import retrieval_metrics


def _reference(gallery, gallery_labels, queries, query_labels):
    """Every query by a full sort on cosine similarity, metric by metric from the definitions."""
    # an all-zero row stays zero (similarity 0 to everything), as the probe normalises it
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    similarity = unit(queries.astype(np.float64)) @ unit(gallery.astype(np.float64)).T
    multilabel = gallery_labels.ndim == 2
    out = {name: [] for name in ("precision@1", "precision@5", "precision@10", "map@r")}
    if not multilabel:
        out.update({"majority@5": [], "majority@10": []})
    for q in range(len(queries)):
        order = np.argsort(-similarity[q], kind="stable")
        if multilabel:
            relevant = ((gallery_labels == 1) & (query_labels[q] == 1)).any(1)
        else:
            relevant = gallery_labels == query_labels[q]
        ranked = relevant[order]
        for k in (1, 5, 10):
            value = ranked[:k].mean()
            out[f"precision@{k}"].append(value if relevant.any() or not multilabel else np.nan)
        r = relevant.sum()
        out["map@r"].append(
            np.nan
            if r == 0
            else sum(ranked[:i].mean() for i in range(1, r + 1) if ranked[i - 1]) / r
        )
        if not multilabel:
            for k in (5, 10):
                votes = np.bincount(gallery_labels[order[:k]], minlength=query_labels.max() + 1)
                out[f"majority@{k}"].append(votes.argmax() == query_labels[q])
    return {name: np.array(values, dtype=float) for name, values in out.items()}


@pytest.mark.parametrize("similarity_bytes", [256 << 20, 4 * 90 * 7])  # one chunk; 7 queries
@pytest.mark.parametrize("multilabel", [False, True])
def test_retrieval_metrics_match_the_definitions(similarity_bytes, multilabel):
    rng = np.random.default_rng(3)
    if multilabel:
        gallery_labels = rng.integers(-1, 2, (90, 3)).astype(np.int8)
        query_labels = rng.integers(-1, 2, (40, 3)).astype(np.int8)
        query_labels[0] = 0  # a query with no positive label has nothing relevant
        signal = rng.normal(size=(3, 12))
        gallery = (gallery_labels == 1) @ signal + rng.normal(size=(90, 12))
        queries = (query_labels == 1) @ signal + rng.normal(size=(40, 12))
    else:
        gallery_labels, query_labels = rng.integers(0, 4, 90), rng.integers(0, 4, 40)
        means = rng.normal(size=(4, 12))
        gallery = means[gallery_labels] + rng.normal(size=(90, 12))
        queries = means[query_labels] + rng.normal(size=(40, 12))
    got = retrieval_per_query(
        gallery, gallery_labels, queries, query_labels, similarity_bytes=similarity_bytes
    )
    expected = _reference(gallery, gallery_labels, queries, query_labels)
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-12, err_msg=name)
    if multilabel:
        assert np.isnan(got["map@r"][0]) and np.isnan(got["precision@1"][0])
    counts = rng.integers(0, 3, (5, 40))
    ((metrics, resampled),) = retrieval_metrics([got], counts)
    defined = np.isfinite(expected["map@r"])
    assert metrics["map@r"] == pytest.approx(expected["map@r"][defined].mean())
    weights = counts[:, defined]
    np.testing.assert_allclose(
        resampled["map@r"],
        (weights * expected["map@r"][defined]).sum(1) / weights.sum(1),
        rtol=1e-6,
    )


def test_retrieval_in_a_run_queries_each_support_set(blob_root):
    results = mp.probe(blob_root, shots=5, seeds=2, methods="retrieval", progress=False)
    frame = results.frame
    assert set(frame["method"]) == {"retrieval"}
    store = open_store(next(p for p in blob_root.rglob("strong*.h5")))
    train_ids = list(store.ids("train"))
    train, labels = store.embeddings("train", "cls"), store.labels("train")
    test, test_labels = store.embeddings("test", "cls"), store.labels("test")
    for seed in (0, 1):
        support = [train_ids.index(i) for i in results.supports[f"blobs|5-shot|seed{seed}"]]
        expected = _reference(train[support], labels[support], test, test_labels)
        row = frame[
            (frame["model"] == "strong") & (frame["seed"] == seed) & (frame["metric"] == "map@r")
        ]
        assert row["value"].iloc[0] == pytest.approx(expected["map@r"].mean(), abs=1e-9)
    summary = results.summary()
    assert summary[summary["metric"] == "precision@1"]["ci_seeds_and_test_low"].notna().all()


@pytest.mark.parametrize("multilabel", [False, True])
def test_ties_rank_the_lower_gallery_row_first_whatever_the_chunks(multilabel):
    """Gallery rows along six axes, ten each (scaled by powers of two: equal once normalised),
    so a query along an axis ties ten rows at the top, one between two axes twenty, and an
    all-zero query every row: precision@k, AP@R and the vote hang on which tied rows rank
    first, and the rule is the stable sort's, the lower gallery row first."""
    rng = np.random.default_rng(11)
    axes = np.eye(6)
    gallery = axes[rng.permutation(np.repeat(np.arange(6), 10))]
    gallery *= 2.0 ** rng.integers(-2, 3, (60, 1))
    queries = np.concatenate([np.zeros((1, 6)), axes, axes + np.roll(axes, 1, axis=1)])
    if multilabel:
        gallery_labels = rng.integers(-1, 2, (60, 3)).astype(np.int8)
        query_labels = rng.integers(0, 2, (len(queries), 3)).astype(np.int8)
    else:
        gallery_labels, query_labels = rng.integers(0, 3, 60), rng.integers(0, 3, len(queries))
    expected = _reference(gallery, gallery_labels, queries, query_labels)
    one_chunk = retrieval_per_query(gallery, gallery_labels, queries, query_labels)
    for name in expected:
        np.testing.assert_allclose(one_chunk[name], expected[name], atol=1e-12, err_msg=name)
    for queries_per_chunk in (1, 4):
        got = retrieval_per_query(
            gallery,
            gallery_labels,
            queries,
            query_labels,
            similarity_bytes=4 * 60 * queries_per_chunk,
        )
        for name in expected:  # bit for bit: the chunks change nothing
            np.testing.assert_array_equal(got[name], one_chunk[name], err_msg=name)


@pytest.mark.parametrize("k", [7, 60])  # the top 7 picked first; every row ranked whole
@pytest.mark.parametrize("threads", [1, 3])  # 3: the rows' keys sorted in three parts at once
def test_the_ranking_is_a_stable_sort_also_with_a_tie_across_the_kth_place(k, threads, monkeypatch):
    """Each row's k-th largest value copied to a lower column outside the top k (that column
    must take the k-th place, though torch.topk may pick either), a -0.0 beside a 0.0 (equal,
    with other bits) and, in half the rows, a tie inside the top k too."""
    monkeypatch.setattr(retrieval, "PARALLEL_SORT_KEYS", 0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(5)
    similarity = rng.normal(size=(40, 60)).astype(np.float32)
    for row in range(40):
        order = np.argsort(-similarity[row], kind="stable")
        outside = order[k:][order[k:] < order[k - 1]]
        if len(outside):
            similarity[row, outside[0]] = similarity[row, order[k - 1]]
        if row % 2:
            similarity[row, order[1]] = similarity[row, order[2]]
        similarity[row, order[[3, 4]]] = -0.0, 0.0
    expected = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    try:
        np.testing.assert_array_equal(retrieval._nearest(similarity.copy(), k), expected)
    finally:
        torch.set_num_threads(before)
