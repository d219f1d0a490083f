"""Bootstrap intervals over images for the similarity matrices.

Each replicate draws n images with replacement (multinomial counts w, Σw = n), the same draw
for every pair and metric, and recomputes the statistics on that resample as if it were the
data (duplicates included). Recomputing CKA in feature space costs n·d² per pair and replicate;
instead the weighted cross-product norm is a quadratic form in w,
    ‖X_cᵀ diag(w) Y_c‖²_F = wᵀ (K ∘ L) w,   K = X_cX_cᵀ, L = Y_cY_cᵀ  (X_c, Y_c centred once),
evaluated for every replicate at once, one block of rows of K ∘ L at a time (it never exists
whole): n²·(d + N) per pair instead of N·n·d², far cheaper while n < d². The resample's own
centring and the debiased estimator's row norms are low-rank corrections built from X_cᵀw.

Mutual k-NN keeps each image's neighbours from the full sample and resamples the images whose
overlaps are averaged (re-searching neighbours inside each resample would count an image's
duplicates as its neighbours).
"""

from collections.abc import Sequence

import numpy as np

from medprobe.probe.similarity.measures import (
    CKA_METRICS,
    PreparedEntry,
    neighbour_overlap,
    normalise_hsic,
    undefined_as_nan,
)

# Gram-block values held at once across entries (float32: 128 MB), whatever n is.
GRAM_VALUES_PER_BLOCK = 1 << 25


def bootstrap_similarities(
    entries: Sequence[PreparedEntry], metrics: Sequence[str], counts: np.ndarray
) -> dict[str, np.ndarray]:
    """(N, S, S) float64 per metric: each replicate's similarity matrix, for S prepared entries
    and `counts` (N, n) from `medprobe.probe.stats.bootstrap.resample_counts`."""
    n_rows = counts.shape[1]
    replicates: dict[str, np.ndarray] = {}
    if CKA_METRICS & set(metrics):
        cross, norm_products, totals = _weighted_terms(entries, counts)
        if "cka" in metrics:
            replicates["cka"] = normalise_hsic(cross)
        if "cka_debiased" in metrics:
            n = n_rows
            outer = totals[:, :, None] * totals[:, None, :] / ((n - 1) * (n - 2))
            hsic = cross - n / (n - 2) * norm_products + outer
            size = cross + n / (n - 2) * norm_products + outer
            dtype = entries[0].centred.dtype.type
            replicates["cka_debiased"] = undefined_as_nan(hsic, size, n, dtype)
    if "mutual_knn" in metrics:
        weights = counts / n_rows
        alignment = np.empty((len(counts), len(entries), len(entries)))
        for i, j in _pairs(len(entries)):
            overlap = neighbour_overlap(entries[i].neighbours, entries[j].neighbours)
            alignment[:, i, j] = alignment[:, j, i] = weights @ overlap
        replicates["mutual_knn"] = alignment
    return {metric: replicates[metric] for metric in metrics}


def _pairs(n_entries: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n_entries) for j in range(i, n_entries)]


def _weighted_terms(
    entries: Sequence[PreparedEntry], counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per replicate, on the resample centred by its own means:
    cross (N, S, S) ‖X_iᵀY_j‖²_F, norm_products (N, S, S) Σ_rows ‖x_r‖²‖y_r‖² and
    totals (N, S) ‖X_i‖²_F (the terms `unbiased_hsic` takes).

    With a = X_cᵀw and δ = a/n the resample's mean shift, the resample's centred cross-product
    is X_cᵀWY_c - a_x a_yᵀ/n, whose squared norm is
        wᵀ(K∘L)w - 2/n·Σ_r w_r (x_r·a_x)(y_r·a_y) + ‖a_x‖²‖a_y‖²/n²;
    a resampled row's centred norm is ‖x_r‖² - 2 x_r·δ + ‖δ‖², and ‖X‖²_F = wᵀdiag(K) - ‖a‖²/n.
    """
    n_resamples, n = counts.shape
    n_entries = len(entries)
    dtype = entries[0].centred.dtype
    weights = counts.astype(dtype)
    weights_t = np.ascontiguousarray(weights.T)
    sums = [weights @ e.centred for e in entries]  # a_iᵀ per replicate: (N, d_i)
    sums_squared = np.stack(  # ‖a_i‖²: (N, S)
        [np.einsum("td,td->t", a, a, dtype=np.float64) for a in sums], axis=1
    )
    weighted_norms = np.stack(
        [counts @ e.squared_row_norms for e in entries], axis=1
    )  # Σ_r w_r ‖x_r‖²: (N, S)
    quadratic = np.zeros((n_resamples, n_entries, n_entries))
    mean_terms = np.zeros_like(quadratic)  # Σ_r w_r (x_r·a_i)(y_r·a_j)
    norm_products = np.zeros_like(quadratic)
    rows_per_block = max(1, min(n, GRAM_VALUES_PER_BLOCK // (n_entries * n)))
    for start in range(0, n, rows_per_block):
        rows = slice(start, start + rows_per_block)
        block_weights = weights_t[rows]  # (b, N)
        grams = [e.centred[rows] @ e.centred.T for e in entries]  # (b, n) each
        projections = [  # x_r·a_i: (b, N)
            (e.centred[rows] @ a.T).astype(np.float64) for e, a in zip(entries, sums, strict=True)
        ]
        centred_norms = [  # ‖x_r - δ_i‖² per replicate: (b, N)
            e.squared_row_norms[rows, None] - 2 / n * p + sums_squared[:, i] / n**2
            for i, (e, p) in enumerate(zip(entries, projections, strict=True))
        ]
        for i, j in _pairs(n_entries):
            hadamard = grams[i] * grams[j]
            quadratic[:, i, j] += np.einsum("bt,bt->t", hadamard @ weights_t, block_weights)
            mean_terms[:, i, j] += np.einsum(
                "bt,bt,bt->t", block_weights, projections[i], projections[j]
            )
            norm_products[:, i, j] += np.einsum(
                "bt,bt,bt->t", block_weights, centred_norms[i], centred_norms[j]
            )
    for array in (quadratic, mean_terms, norm_products):
        upper = np.triu_indices(n_entries, 1)
        array[:, upper[1], upper[0]] = array[:, upper[0], upper[1]]
    outer_sums = sums_squared[:, :, None] * sums_squared[:, None, :]
    cross = quadratic - 2 / n * mean_terms + outer_sums / n**2
    totals = weighted_norms - sums_squared / n
    return cross, norm_products, totals
