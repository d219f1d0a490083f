"""DeLong's paired test for two AUROCs scored on the same images.

DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated
receiver operating characteristic curves: a nonparametric approach", Biometrics 44:837-845: each
AUROC is the mean of its placement values (per positive, the fraction of negatives it outscores,
ties counting half; per negative, the fraction of positives that outscore it); the covariance of
the two AUROCs is S10/m + S01/n, S10 and S01 the sample covariance matrices of the two
classifiers' placement values over the m positives and the n negatives. The placement values
come from midranks in O(N log N) (Sun & Xu 2014, "Fast implementation of DeLong's algorithm for
comparing the areas under correlated receiver operating characteristic curves", IEEE Signal
Processing Letters 21:1389-1393), not from the m x n comparisons.

Images of one patient (or lesion) are not independent, and DeLong's variance then comes out too
small. Given each image's cluster, the covariance is Obuchowski's (1997, "Nonparametric analysis
of clustered ROC curve data", Biometrics 53:567-578): the placement values are summed per
cluster, V10_i over its m_i positives and V01_i over its n_i negatives, and with I clusters (I10
holding positives, I01 negatives), M positives and N negatives,
    S10 = I10 / ((I10 - 1) M) sum_i (V10_i - m_i A)(V10_i - m_i B)
    S01 = I01 / ((I01 - 1) N) sum_i (V01_i - n_i A)(V01_i - n_i B)
    S11 = I / (I - 1) sum_i (V10_i - m_i A)(V01_i - n_i B)
    cov(A, B) = S10 / M + S01 / N + (S11(A, B) + S11(B, A)) / (M N).
With one image per cluster S11 vanishes and S10, S01 are DeLong's, so the two tests agree.
"""

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata


@dataclass(frozen=True)
class DelongResult:
    """AUROCs of two classifiers on the same images and the test of their difference."""

    auc_a: float
    auc_b: float
    difference: float  # auc_a - auc_b
    standard_error: float  # of the difference
    z: float  # difference / standard_error
    p_value: float  # two-sided, 2 * (1 - Phi(|z|))


def delong_paired(
    positive: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    groups: np.ndarray | None = None,
) -> DelongResult:
    """DeLong's test of AUROC(a) = AUROC(b): positive (N,) bool, scores_a and scores_b (N,);
    groups (N,), each image's patient or lesion, makes it Obuchowski's clustered test.

    Degenerate cases: without both outcomes every field is NaN; with fewer than two positives
    or two negatives the covariance is undefined, so the AUROCs come back and the rest is NaN;
    a zero standard error with a zero difference (e.g. identical scores) gives z = 0, p = 1 (as
    pROC does), and with a nonzero difference z = +-inf, p = 0."""
    positive = np.asarray(positive, dtype=bool)
    scores = np.stack([np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)])
    if scores.shape[1] != len(positive):
        raise ValueError(f"scores have {scores.shape[1]} images but positive has {len(positive)}")
    n_positive = int(positive.sum())
    n_negative = len(positive) - n_positive
    if n_positive == 0 or n_negative == 0:
        nan = float("nan")
        return DelongResult(nan, nan, nan, nan, nan, nan)
    positive_scores, negative_scores = scores[:, positive], scores[:, ~positive]
    # Midranks among all images, minus midranks within a class, count the other class below.
    all_ranks = rankdata(np.concatenate([positive_scores, negative_scores], axis=1), axis=1)
    positive_ranks = rankdata(positive_scores, axis=1)
    negative_ranks = rankdata(negative_scores, axis=1)
    # V10: per positive, the fraction of negatives it outscores (ties half)
    positive_placements = (all_ranks[:, :n_positive] - positive_ranks) / n_negative
    # V01: per negative, the fraction of positives that outscore it (ties half)
    negative_placements = 1 - (all_ranks[:, n_positive:] - negative_ranks) / n_positive
    auc = positive_placements.mean(1)
    auc_a, auc_b = float(auc[0]), float(auc[1])
    difference = auc_a - auc_b
    if groups is None:
        if n_positive < 2 or n_negative < 2:
            nan = float("nan")
            return DelongResult(auc_a, auc_b, difference, nan, nan, nan)
        covariance = (
            np.cov(positive_placements) / n_positive + np.cov(negative_placements) / n_negative
        )
    else:
        groups = np.asarray(groups)
        if len(groups) != len(positive):
            raise ValueError(f"groups has {len(groups)} images but positive has {len(positive)}")
        covariance = _clustered_covariance(
            auc, positive_placements, negative_placements, groups[positive], groups[~positive]
        )
        if covariance is None:
            nan = float("nan")
            return DelongResult(auc_a, auc_b, difference, nan, nan, nan)
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    standard_error = float(np.sqrt(max(variance, 0.0)))
    if standard_error == 0:
        z = 0.0 if difference == 0 else float(np.copysign(np.inf, difference))
    else:
        z = difference / standard_error
    p_value = float(2 * norm.sf(abs(z)))
    return DelongResult(auc_a, auc_b, difference, standard_error, z, min(p_value, 1.0))


def _clustered_covariance(
    auc: np.ndarray,
    positive_placements: np.ndarray,
    negative_placements: np.ndarray,
    positive_groups: np.ndarray,
    negative_groups: np.ndarray,
) -> np.ndarray | None:
    """(2, 2) covariance of the two AUROCs by Obuchowski's formula (module docstring), or None
    with fewer than two clusters holding positives or two holding negatives.

    auc (2,); placements (2, M) and (2, N); the groups of the positives (M,) and negatives (N,)."""
    _, cluster_of = np.unique(
        np.concatenate([positive_groups, negative_groups]).astype(str), return_inverse=True
    )
    n_clusters = int(cluster_of.max()) + 1
    of_positive, of_negative = (
        cluster_of[: len(positive_groups)],
        cluster_of[len(positive_groups) :],
    )
    m = np.bincount(of_positive, minlength=n_clusters)  # positives per cluster
    n = np.bincount(of_negative, minlength=n_clusters)
    with_positives, with_negatives = int((m > 0).sum()), int((n > 0).sum())
    if with_positives < 2 or with_negatives < 2:
        return None
    # (2, I): each classifier's placement sums per cluster, centred on m_i A (or n_i A)
    v10 = np.stack([np.bincount(of_positive, p, n_clusters) for p in positive_placements])
    v01 = np.stack([np.bincount(of_negative, p, n_clusters) for p in negative_placements])
    d10, d01 = v10 - m * auc[:, None], v01 - n * auc[:, None]
    total_positive, total_negative = len(positive_groups), len(negative_groups)
    s10 = with_positives / ((with_positives - 1) * total_positive) * (d10 @ d10.T)
    s01 = with_negatives / ((with_negatives - 1) * total_negative) * (d01 @ d01.T)
    s11 = n_clusters / (n_clusters - 1) * (d10 @ d01.T)  # S11[a, b]: V10 of a with V01 of b
    return (
        s10 / total_positive
        + s01 / total_negative
        + (s11 + s11.T) / (total_positive * total_negative)
    )
