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
SIMILARITY_BYTES, and a few times that while the nearest are picked and their int64 keys sorted,
over the caller's gallery. The gallery is not copied normalised (200,000 x 1,024 float32 would
be 0.8 GB more): each chunk's similarities are divided by the gallery norms. A query's norm
scales its whole row, which changes no ranking (beyond float32 rounding of near-equal
similarities), so queries are not normalised at all. The chunks take the queries in order of R,
so each is ranked about as deep as it needs: an ISIC-like task ranks half the gallery for its
largest class and a few hundred rows for its rarest.
"""

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from medprobe.probe.blas import one_blas_thread
from medprobe.probe.fit.neighbors import top_k_lowest_index_first

if TYPE_CHECKING:  # torch is imported inside functions: `import medprobe.probe` stays light
    import torch

RETRIEVAL_KS = (1, 5, 10)
MAJORITY_KS = (5, 10)
SIMILARITY_BYTES = 128 << 20
# Galleries at least this large are compared on every BLAS thread (a full budget's train split)
PARALLEL_GALLERY = 4096
# Rankings with at least this many keys are sorted on every thread (a few-shot one is too small)
PARALLEL_SORT_KEYS = 1 << 20


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
    gallery_labels, query_labels = np.asarray(gallery_labels), np.asarray(query_labels)
    gallery = np.asarray(gallery, dtype=np.float32)
    # einsum sums the squares row by row: np.linalg.norm would square a whole copy first
    inverse_norms = 1 / np.maximum(np.sqrt(np.einsum("ij,ij->i", gallery, gallery)), 1e-12)
    if multilabel:
        gallery_positive = (gallery_labels == 1).astype(np.float32)
        query_positive = (query_labels == 1).astype(np.float32)
    n_queries, n_gallery = len(queries), len(gallery)
    names = [f"precision@{k}" for k in RETRIEVAL_KS] + ["map@r"]
    if not multilabel:
        names += [f"majority@{k}" for k in MAJORITY_KS]
        n_classes = int(max(np.max(gallery_labels), np.max(query_labels))) + 1
    results = {name: np.full(n_queries, np.nan) for name in names}
    chunk = max(1, similarity_bytes // max(1, 4 * n_gallery))
    top = min(max(RETRIEVAL_KS + MAJORITY_KS), n_gallery)
    if multilabel:
        n_relevant = _shared_label_counts(query_positive, gallery_positive, chunk)
    else:
        n_relevant = np.bincount(gallery_labels, minlength=n_classes)[query_labels]
    for rows in _chunks_by_depth(np.maximum(n_relevant, top), chunk):
        chunk_queries = np.asarray(queries[rows], dtype=np.float32)
        # a few-shot gallery's product is small next to the ranking's torch operations, which
        # BLAS threads left spinning would slow 2.5x (`probe.blas`)
        with one_blas_thread() if n_gallery < PARALLEL_GALLERY else nullcontext():
            similarity = chunk_queries @ gallery.T  # (c, G) float32
        similarity *= inverse_norms
        # one ranking per chunk, as deep as its largest R: the order (similarity down, gallery
        # row up) is total, so each query's top R (and top k) is a prefix of it
        nearest = _nearest(similarity, max(top, int(n_relevant[rows].max())))  # (c, depth)
        if multilabel:
            relevant = (query_positive[rows] @ gallery_positive.T) > 0
            hits = np.take_along_axis(relevant, nearest, 1)
        else:  # the nearest rows' labels: a gather from G labels, not from a (c, G) mask
            hits = gallery_labels[nearest] == query_labels[rows, None]
        has_relevant = n_relevant[rows] > 0
        for k in RETRIEVAL_KS:
            precision = hits[:, : min(k, top)].mean(1)
            results[f"precision@{k}"][rows] = (
                np.where(has_relevant, precision, np.nan) if multilabel else precision
            )
        results["map@r"][rows] = _average_precision_at_r(hits, n_relevant[rows])
        if not multilabel:
            neighbour_labels = gallery_labels[nearest[:, :top]]
            for k in MAJORITY_KS:
                results[f"majority@{k}"][rows] = (
                    _majority(neighbour_labels[:, : min(k, top)], n_classes) == query_labels[rows]
                )
    return results


def _chunks_by_depth(depths: np.ndarray, chunk: int) -> list[np.ndarray]:
    """Query rows in chunks of at most `chunk`, in order of depth (Q,), each starting afresh
    where the depth more than doubles: no chunk ranks its queries more than twice as deep as
    the shallowest of them needs (ISIC-like: a chunk of the largest class, ranked half the
    gallery deep; the others a few thousand rows deep or less)."""
    order = np.argsort(depths, kind="stable")
    chunks, start = [], 0
    while start < len(order):
        stop = min(len(order), start + chunk)
        stop = start + int(
            np.searchsorted(depths[order[start:stop]], 2 * depths[order[start]], "right")
        )
        chunks.append(order[start:stop])
        start = stop
    return chunks


def _shared_label_counts(
    query_positive: np.ndarray, gallery_positive: np.ndarray, chunk: int
) -> np.ndarray:
    """(Q,) int64 R of each multi-label query: the gallery rows sharing a positive label with it.
    Positives (Q, L) and (G, L) float32 0/1."""
    n_relevant = np.empty(len(query_positive), dtype=np.int64)
    for start in range(0, len(query_positive), chunk):
        shared = query_positive[start : start + chunk] @ gallery_positive.T
        n_relevant[start : start + chunk] = (shared > 0).sum(1)
    return n_relevant


def _majority(votes: np.ndarray, n_classes: int) -> np.ndarray:
    """(c,) the most frequent class of each row of votes (c, k) int, ties to the lower class."""
    offsets = np.arange(len(votes))[:, None] * n_classes
    tallies = np.bincount((votes + offsets).ravel(), minlength=len(votes) * n_classes)
    return tallies.reshape(len(votes), n_classes).argmax(1)


def _nearest(similarity: np.ndarray, k: int) -> np.ndarray:
    """(rows, k) int64 gallery rows of the k most similar to each query of similarity (rows, G)
    float32, by decreasing similarity and, among equal ones, increasing gallery row."""
    import torch

    tensor = torch.from_numpy(similarity)
    n_rows, n_gallery = similarity.shape
    if k >= n_gallery:
        values, nearest = tensor, torch.arange(n_gallery).expand(n_rows, -1)
        return _ranked_by_keys(values, nearest).numpy()
    # torch.topk picks any of the rows tied at the k-th place; where the k-th value recurs
    # outside the k picked, the rule wants the lower rows (`top_k_lowest_index_first`). numpy
    # counts 5x faster than torch here.
    values, nearest = tensor.topk(k, dim=1, sorted=False)
    kth = values.min(1, keepdim=True).values
    straddling = torch.from_numpy(np.count_nonzero(similarity >= kth.numpy(), axis=1) > k)
    if straddling.any():  # repaired with the k-th values found: no second top-k of the rows
        values[straddling], nearest[straddling] = top_k_lowest_index_first(
            tensor[straddling], k, kth[straddling]
        )
    return _ranked_by_keys(values, nearest).numpy()


def _ranked_by_keys(values: "torch.Tensor", rows: "torch.Tensor") -> "torch.Tensor":
    """rows (c, k) int64 ordered by decreasing values (c, k) float32 and, among equal ones,
    increasing row: one sort of int64 keys (the value's bits ordered as integers, times 2^32,
    plus the row). numpy sorts them with AVX-512: picking the top R unsorted and sorting its
    keys ranked half an ISIC-sized gallery 1.2x faster than torch's stable sort of every row,
    and as fast as a sorted top-k whose ties (most deep rows have some) still need ordering."""
    import torch

    bits = (values + 0.0).view(torch.int32)  # + 0.0: -0.0 becomes +0.0, which it equals
    # in place, a pass each: the keys of a large class's chunk are 100+ MB, fresh memory slow
    ordered = bits >> 31
    ordered &= 0x7FFFFFFF
    ordered ^= bits  # as integers, in the floats' order
    ordered.bitwise_not_()  # decreasing
    keys = ordered.to(torch.int64)
    keys <<= 32
    keys += rows
    _sort_rows_to_rows(keys.numpy())
    return keys


def _sort_rows_to_rows(keys: np.ndarray) -> None:
    """Sort each row of keys (c, k) int64 in place and keep each key's row (its low 32 bits).
    numpy sorts on one thread and releases the GIL, so a large chunk's rows are split over
    torch's intra-op threads (1.75x on two cores; a `--jobs` worker's torch has one thread)."""
    import torch

    def sort(rows: np.ndarray) -> None:
        rows.sort(axis=1)
        rows &= 0xFFFFFFFF

    n_threads = min(torch.get_num_threads(), len(keys))
    if n_threads < 2 or keys.size < PARALLEL_SORT_KEYS:
        sort(keys)
        return
    bounds = np.linspace(0, len(keys), n_threads + 1).astype(int)
    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(sort, [keys[start:stop] for start, stop in pairwise(bounds)]))


def _average_precision_at_r(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """(c,) AP@R per query from hits (c, depth) bool, whether each ranked gallery item is
    relevant (depth >= every R), and n_relevant (c,) R; NaN without relevant items. The sum runs
    left to right and stops at R (a running sum read at R - 1: torch's cumsum is a plain loop
    per row, in float64), so a deeper ranking, which another chunk of queries may need, cannot
    change its rounding."""
    import torch

    hits = torch.from_numpy(hits)
    positions = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64)
    terms = torch.cumsum(hits, 1, dtype=torch.float64)  # hits so far, exact
    terms /= positions  # precision@i
    terms *= hits  # where the i-th is relevant
    running = torch.cumsum(terms, 1).numpy()
    last = np.maximum(n_relevant, 1) - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        total = running[np.arange(len(hits)), last] / n_relevant
    return np.where(n_relevant > 0, total, np.nan)
