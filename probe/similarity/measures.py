"""How alike two embeddings of the same images are: linear CKA, debiased CKA and mutual k-NN
alignment, for every pair of many entries, with each entry's share of the work done once.

Linear CKA (Kornblith et al. 2019) is computed in feature space, from the centred cross-product
XᵀY (d_x x d_y) accumulated over row chunks: n·d_x·d_y per pair and no n x n matrix, so it
runs on hundreds of thousands of rows. Debiased CKA swaps the biased HSIC for the unbiased
estimator of Song et al. (2012), as Nguyen, Raghu & Kornblith (2021) do; plain CKA is inflated
when n is small against the dimension, and with linear kernels every term of the unbiased
estimator reduces to that same cross-product plus row norms (see `unbiased_hsic`). Mutual k-NN
alignment (Huh et al. 2024) is the mean, over images, of the fraction of an image's k cosine
nearest neighbours (itself excluded) that the two representations share; each entry's
neighbour sets are found once, in chunks of queries, and compared per pair.

Rows must already be matched: row r of every entry is the same image.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medprobe.cache.errors import ToolkitError

logger = logging.getLogger(__name__)

METRICS = ("cka", "cka_debiased", "mutual_knn")
CKA_METRICS = frozenset({"cka", "cka_debiased"})
MIN_ROWS = 4  # the unbiased HSIC estimator divides by n - 3

# Rows per cross-product chunk: the chunk's product is summed in float32 by BLAS, the chunks in
# float64, so rounding grows with the chunk, not with n.
ROWS_PER_PRODUCT = 8192
# Similarities held at once by the neighbour search (a float32 block and argpartition's int64
# indices: 12 bytes each, so about 200 MB whatever n is).
SIMILARITIES_PER_CHUNK = 1 << 24
# Equality tests held at once when neighbour sets are compared (chunk rows x k x k bools).
OVERLAP_TESTS_PER_CHUNK = 1 << 24


def compute_dtype(embeddings: np.ndarray) -> type[np.floating]:
    """float64 for float64 input (exact references in tests), float32 for stores (float16/32):
    BLAS runs twice as fast and sums of ≤ ROWS_PER_PRODUCT float32 products lose < 1e-4."""
    return np.float64 if embeddings.dtype == np.float64 else np.float32


def centred(embeddings: np.ndarray) -> np.ndarray:
    """(n, d) copy of `embeddings` with each column's mean removed; means taken in float64."""
    dtype = compute_dtype(embeddings)
    out = np.array(embeddings, dtype=dtype, copy=True)
    out -= embeddings.mean(axis=0, dtype=np.float64).astype(dtype)
    return out


def cross_product_norm(x: np.ndarray, y: np.ndarray) -> float:
    """‖xᵀy‖²_F for (n, d_x) and (n, d_y) arrays, accumulated in float64 over row chunks."""
    total = np.zeros((x.shape[1], y.shape[1]))
    for start in range(0, x.shape[0], ROWS_PER_PRODUCT):
        stop = start + ROWS_PER_PRODUCT
        total += x[start:stop].T @ y[start:stop]
    return float(np.einsum("ij,ij->", total, total))


def unbiased_hsic(cross: np.ndarray, squared_row_norms: np.ndarray, n_rows: int) -> np.ndarray:
    """n(n-3)·HSIC₁ for every pair of entries with linear kernels, from feature-space terms.

    cross: (S, S) ‖X_iᵀX_j‖²_F of centred X; squared_row_norms: (S, n) ‖x_r‖² of centred rows.
    Song et al.'s estimator on K = XXᵀ and L = YYᵀ with zeroed diagonals K̃, L̃ is
        n(n-3)·HSIC₁ = tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((n-1)(n-2)) - 2/(n-2)·1ᵀK̃L̃1.
    With centred columns, tr(K̃L̃) = ‖XᵀY‖² - Σ_r ‖x_r‖²‖y_r‖², 1ᵀK̃1 = -‖X‖²_F and
    1ᵀK̃L̃1 = Σ_r ‖x_r‖²‖y_r‖², which gives the O(n·d) form below. The estimator is invariant
    to shifting the columns, so centring changes nothing but rounding.
    """
    n = n_rows
    norm_products = squared_row_norms @ squared_row_norms.T
    totals = squared_row_norms.sum(axis=1)
    return cross - n / (n - 2) * norm_products + np.outer(totals, totals) / ((n - 1) * (n - 2))


def debiased_cka(
    cross: np.ndarray, squared_row_norms: np.ndarray, n_rows: int, dtype: type[np.floating]
) -> np.ndarray:
    """(S, S) debiased CKA from `unbiased_hsic`'s inputs, NaN where it is undefined (see
    `undefined_as_nan`)."""
    n = n_rows
    totals = squared_row_norms.sum(axis=1)
    norm_products = squared_row_norms @ squared_row_norms.T
    hsic = unbiased_hsic(cross, squared_row_norms, n)
    size = cross + n / (n - 2) * norm_products + np.outer(totals, totals) / ((n - 1) * (n - 2))
    return undefined_as_nan(hsic, size, n, dtype)


def undefined_as_nan(
    hsic: np.ndarray, size: np.ndarray, n_rows: int, dtype: type[np.floating]
) -> np.ndarray:
    """Debiased CKA from unbiased HSICs (..., S, S) and the size of the terms each is a
    difference of (same shape), NaN where it is undefined, with the reason logged.

    The unbiased HSIC of an entry with itself is a difference of terms that cancel exactly
    when the entry has no variance the estimator can see (two distinct rows, n = 4-6 with
    duplicates: Song et al.'s formula gives 0/0); rounding then leaves a tiny number of either
    sign, and the ratio is noise (-8.9 and 1.08 were seen). So an HSIC within rounding of its
    terms (64·eps of `dtype`, the arithmetic the cross-products ran in, times their size) is
    taken as 0 and its pairs are NaN; a value still outside [-1, 1] beyond rounding is NaN too.
    """
    hsic = np.array(hsic, dtype=np.float64)
    eps = 64 * float(np.finfo(dtype).eps)
    diagonal = np.diagonal(hsic, axis1=-2, axis2=-1)
    undefined = np.abs(diagonal) <= eps * np.diagonal(size, axis1=-2, axis2=-1)
    if undefined.any():
        logger.warning(
            "debiased CKA is undefined (0/0) in %d case(s): an entry's unbiased HSIC with "
            "itself is 0 within rounding (too few distinct rows among %d); reported as NaN",
            int(undefined.sum()),
            n_rows,
        )
    hsic = np.where(undefined[..., :, None] | undefined[..., None, :], np.nan, hsic)
    values = normalise_hsic(hsic)
    outside = np.abs(values) > 1 + eps
    if outside.any():
        logger.warning(
            "debiased CKA came out outside [-1, 1] in %d case(s) (the unbiased estimator's "
            "noise at %d rows); reported as NaN",
            int(outside.sum()),
            n_rows,
        )
    return np.where(outside, np.nan, np.clip(values, -1, 1))


def normalise_hsic(hsic: np.ndarray) -> np.ndarray:
    """CKA from HSIC: hsic_ij / sqrt(hsic_ii · hsic_jj) over the last two axes of (..., S, S);
    NaN where an entry has no variance (or its unbiased estimate came out ≤ 0)."""
    diagonal = np.diagonal(hsic, axis1=-2, axis2=-1)
    scale = np.sqrt(np.clip(diagonal[..., :, None] * diagonal[..., None, :], 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, hsic / np.where(scale > 0, scale, 1), np.nan)


def nearest_neighbours(embeddings: np.ndarray, k: int) -> np.ndarray:
    """(n, k) int32: the k rows of highest cosine similarity to each row, itself excluded.

    Queries go in chunks so the similarities held at once stay near SIMILARITIES_PER_CHUNK
    whatever n is. Among equally similar rows the lower row index wins (one rule, the k-NN
    probe's too), so tied neighbours give the same overlap whatever the chunking.
    """
    dtype = compute_dtype(embeddings)
    unit = np.array(embeddings, dtype=dtype, copy=True)
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    unit /= np.where(norms > 0, norms, 1)
    n = len(unit)
    neighbours = np.empty((n, k), dtype=np.int32)
    rows_per_chunk = max(1, min(n, SIMILARITIES_PER_CHUNK // n))
    for start in range(0, n, rows_per_chunk):
        stop = min(n, start + rows_per_chunk)
        similarities = unit[start:stop] @ unit.T
        similarities[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        neighbours[start:stop] = _top_k_lowest_index_first(similarities, k)
    return neighbours


def _top_k_lowest_index_first(similarities: np.ndarray, k: int) -> np.ndarray:
    """(rows, k) column indices of each row's k largest values, in column order, the lower
    column first among ties (what a stable sort by decreasing value keeps)."""
    n = similarities.shape[1]
    kth = np.partition(similarities, n - k, axis=1)[:, n - k, None]
    greater = similarities > kth
    tied = similarities == kth
    needed = k - greater.sum(1, keepdims=True)
    chosen = greater | (tied & (np.cumsum(tied, axis=1) <= needed))
    return np.nonzero(chosen)[1].reshape(len(similarities), k)


def neighbour_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) float64: |A_r ∩ B_r| / k for two (n, k) neighbour index arrays (rows of distinct
    indices), in chunks of rows."""
    n, k = a.shape
    overlap = np.empty(n)
    rows_per_chunk = max(1, OVERLAP_TESTS_PER_CHUNK // (k * k))
    for start in range(0, n, rows_per_chunk):
        stop = start + rows_per_chunk
        shared = (a[start:stop, :, None] == b[start:stop, None, :]).sum(axis=(1, 2))
        overlap[start:stop] = shared / k
    return overlap


@dataclass(frozen=True, eq=False)
class PreparedEntry:
    """One entry's embeddings as every metric needs them, computed once and shared by its pairs.

    centred: (n, d) float32 (float64 for float64 input) with column means removed, or None when
    no CKA is asked for; squared_row_norms: (n,) float64 ‖centred row‖²; neighbours: (n, k)
    int32 cosine nearest neighbours, or None when mutual k-NN is not asked for.
    """

    centred: np.ndarray | None
    squared_row_norms: np.ndarray | None
    neighbours: np.ndarray | None

    @property
    def n_rows(self) -> int:
        present = self.centred if self.centred is not None else self.neighbours
        return 0 if present is None else len(present)


def prepare_entry(embeddings: np.ndarray, metrics: Sequence[str], knn_k: int) -> PreparedEntry:
    """Centre and find neighbours for one (n, d) entry; the input is not modified."""
    neighbours = nearest_neighbours(embeddings, knn_k) if "mutual_knn" in metrics else None
    if not CKA_METRICS & set(metrics):
        return PreparedEntry(None, None, neighbours)
    values = centred(embeddings)
    squared_row_norms = np.einsum("ij,ij->i", values, values, dtype=np.float64)
    return PreparedEntry(values, squared_row_norms, neighbours)


def pairwise_similarities(
    entries: Sequence[PreparedEntry], metrics: Sequence[str]
) -> dict[str, np.ndarray]:
    """(S, S) float64 symmetric matrix per metric, for S prepared entries over the same n rows.

    The cross-product of each unordered pair is computed once and serves both CKAs.
    """
    n_entries = len(entries)
    n_rows = entries[0].n_rows
    matrices: dict[str, np.ndarray] = {}
    if CKA_METRICS & set(metrics):
        cross = np.empty((n_entries, n_entries))
        for i in range(n_entries):
            for j in range(i, n_entries):
                cross[i, j] = cross[j, i] = cross_product_norm(
                    entries[i].centred, entries[j].centred
                )
        if "cka" in metrics:
            matrices["cka"] = normalise_hsic(cross)
        if "cka_debiased" in metrics:
            norms = np.stack([e.squared_row_norms for e in entries])
            dtype = entries[0].centred.dtype.type
            matrices["cka_debiased"] = debiased_cka(cross, norms, n_rows, dtype)
    if "mutual_knn" in metrics:
        alignment = np.empty((n_entries, n_entries))
        for i in range(n_entries):
            for j in range(i, n_entries):
                overlap = neighbour_overlap(entries[i].neighbours, entries[j].neighbours)
                alignment[i, j] = alignment[j, i] = overlap.mean()
        matrices["mutual_knn"] = alignment
    return {metric: matrices[metric] for metric in metrics}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two (n, d) representations of the same n images (rows matched)."""
    return float(pairwise_similarities(_prepare_pair(x, y, ("cka",), 1), ("cka",))["cka"][0, 1])


def debiased_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA with the unbiased HSIC estimator; near 0 for independent x and y at any n.
    NaN (with a logged reason) where the estimator is undefined, see `debiased_cka`."""
    metrics = ("cka_debiased",)
    return float(pairwise_similarities(_prepare_pair(x, y, metrics, 1), metrics)[metrics[0]][0, 1])


def mutual_knn_alignment(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Mean fraction of shared cosine k-nearest neighbours: 1 for identical neighbourhoods,
    about k/(n-1) for independent ones."""
    metrics = ("mutual_knn",)
    return float(pairwise_similarities(_prepare_pair(x, y, metrics, k), metrics)[metrics[0]][0, 1])


def _prepare_pair(
    x: np.ndarray, y: np.ndarray, metrics: Sequence[str], k: int
) -> list[PreparedEntry]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ToolkitError(
            f"x has shape {x.shape} and y {y.shape}: both must be (n_images, dim) with the same "
            "images in the same rows"
        )
    if len(x) < MIN_ROWS:
        raise ToolkitError(f"x has {len(x)} rows; similarity needs at least {MIN_ROWS} images")
    if not 1 <= k <= len(x) - 2:
        raise ToolkitError(
            f"k={k}: must be at least 1 and below n - 1 = {len(x) - 1} (the other images)",
            argument="k",
        )
    return [prepare_entry(v, metrics, k) for v in (x, y)]
