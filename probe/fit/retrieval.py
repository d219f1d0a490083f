"""Retrieval as a probe: each test image queries the gallery (the train split, or the support set
at a few-shot budget) by cosine similarity; how many of the nearest are relevant says how well
the embedding finds similar cases, with no classifier at all.

Per query: precision@k (k = 1, 5, 10: the share of the k nearest that are relevant), AP@R (R =
the number of relevant gallery images; the mean of precision@i over the relevant ones among the
R nearest, divided by R: Musgrave, Belongie & Lim 2020, "A metric learning reality check"), and
for single-label tasks majority@k (the k nearest's most frequent class, ties to the lower index,
is the query's). Relevant: the same class; multi-label, sharing a positive label. A query with
nothing relevant in the gallery has NaN (its AP@R, and for multi-label every metric). Among
equally similar gallery images the lower gallery row ranks first, the k-NN probe's rule
(`neighbors.top_k_lowest_index_first`): duplicate gallery rows, an all-zero query or ties at the
k-th place give the same scores whatever the chunk size (argpartition left them to the kernel).

Queries are compared a chunk at a time: memory is the (chunk x gallery) similarities, at most
SIMILARITY_BYTES, and about four times that while the nearest are picked (the tie rule's running
count is int64), over the caller's gallery. The gallery is not copied normalised (200,000 x 1,024
float32 would be 0.8 GB more): each chunk's similarities are divided by the gallery norms.
"""

import numpy as np

from medprobe.probe.fit.neighbors import top_k_lowest_index_first

RETRIEVAL_KS = (1, 5, 10)
MAJORITY_KS = (5, 10)
SIMILARITY_BYTES = 128 << 20
# Rankings at least 1/4 of the gallery deep sort whole rows: (2,533 x 20,265, 10,000 deep)
# 1.35 s against 1.93 s for top-k and a sort of those
FULL_SORT_FRACTION = 4


def _normalised(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.maximum(norms, 1e-12)


def retrieval_per_query(
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    *,
    similarity_bytes: int = SIMILARITY_BYTES,
) -> dict[str, np.ndarray]:
    """{metric: (Q,) float64} for queries (Q, D) against gallery (G, D).

    Labels (G,) / (Q,) int class indices, or (G, L) / (Q, L) int8 multi-label with -1 unknown
    (unknown counts as not positive)."""
    multilabel = np.ndim(gallery_labels) == 2
    gallery = np.asarray(gallery, dtype=np.float32)
    # einsum sums the squares row by row: np.linalg.norm would square a whole copy first
    inverse_norms = 1 / np.maximum(np.sqrt(np.einsum("ij,ij->i", gallery, gallery)), 1e-12)
    if multilabel:
        gallery_positive = (np.asarray(gallery_labels) == 1).astype(np.float32)
    n_queries, n_gallery = len(queries), len(gallery)
    names = [f"precision@{k}" for k in RETRIEVAL_KS] + ["map@r"]
    if not multilabel:
        names += [f"majority@{k}" for k in MAJORITY_KS]
    results = {name: np.full(n_queries, np.nan) for name in names}
    chunk = max(1, similarity_bytes // max(1, 4 * n_gallery))
    top = min(max(RETRIEVAL_KS + MAJORITY_KS), n_gallery)
    for start in range(0, n_queries, chunk):
        stop = min(n_queries, start + chunk)
        similarity = _normalised(queries[start:stop]) @ gallery.T  # (c, G) float32
        similarity *= inverse_norms
        if multilabel:
            query_positive = (np.asarray(query_labels[start:stop]) == 1).astype(np.float32)
            relevant = (query_positive @ gallery_positive.T) > 0
        else:
            relevant = gallery_labels[None, :] == query_labels[start:stop, None]
        n_relevant = relevant.sum(1)  # (c,): R of each query
        # one ranking per chunk, as deep as its largest R: the order (similarity down, gallery
        # row up) is total, so each query's top R (and top k) is a prefix of it
        nearest = _nearest(similarity, max(top, int(n_relevant.max())))  # (c, depth)
        hits = np.take_along_axis(relevant, nearest, 1)
        has_relevant = n_relevant > 0
        rows = slice(start, stop)
        for k in RETRIEVAL_KS:
            precision = hits[:, : min(k, top)].mean(1)
            results[f"precision@{k}"][rows] = (
                np.where(has_relevant, precision, np.nan) if multilabel else precision
            )
        results["map@r"][rows] = _average_precision_at_r(hits, n_relevant)
        if not multilabel:
            neighbour_labels = np.asarray(gallery_labels)[nearest]
            for k in MAJORITY_KS:
                votes = neighbour_labels[:, : min(k, top)]
                n_classes = int(max(votes.max(), query_labels.max())) + 1
                counts = np.zeros((len(votes), n_classes), dtype=np.int64)
                np.add.at(counts, (np.arange(len(votes))[:, None], votes), 1)
                results[f"majority@{k}"][rows] = counts.argmax(1) == query_labels[rows]
    return results


def _nearest(similarity: np.ndarray, k: int) -> np.ndarray:
    """(rows, k) int64 gallery rows of the k most similar to each query of similarity (rows, G)
    float32, by decreasing similarity and, among equal ones, increasing gallery row."""
    import torch

    similarity = torch.from_numpy(similarity)
    if k * FULL_SORT_FRACTION >= similarity.shape[1]:
        # mAP@R of a large class ranks half the gallery: one stable sort of every row (ties keep
        # the lower row first) is the same order, faster than picking k and sorting them
        return torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :k].numpy()
    values, rows = top_k_lowest_index_first(similarity, k)
    # the rows come in gallery order, so a stable sort keeps the lower row first among ties
    order = torch.argsort(values, dim=1, descending=True, stable=True)
    return rows.gather(1, order).numpy()


def _average_precision_at_r(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """(c,) AP@R per query from hits (c, depth) bool, whether each ranked gallery item is
    relevant (depth >= every R), and n_relevant (c,) R; NaN without relevant items. The sum runs
    left to right and stops at R (a running sum read at R - 1), so a deeper ranking, which
    another chunk of queries may need, cannot change its rounding."""
    positions = np.arange(1, hits.shape[1] + 1)
    precision_at_i = np.cumsum(hits, 1) / positions
    running = np.cumsum(precision_at_i * hits, 1)
    last = np.maximum(n_relevant, 1) - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        total = running[np.arange(len(hits)), last] / n_relevant
    return np.where(n_relevant > 0, total, np.nan)
