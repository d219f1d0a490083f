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

Images are taken as independent: the test does not know about patients, so where a dataset has
several images per patient the bootstrap's cluster-resampled interval is the one to trust.
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


def delong_paired(positive: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DelongResult:
    """DeLong's test of AUROC(a) = AUROC(b): positive (N,) bool, scores_a and scores_b (N,).

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
    if n_positive < 2 or n_negative < 2:
        nan = float("nan")
        return DelongResult(auc_a, auc_b, difference, nan, nan, nan)
    covariance = np.cov(positive_placements) / n_positive + np.cov(negative_placements) / n_negative
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    standard_error = float(np.sqrt(max(variance, 0.0)))
    if standard_error == 0:
        z = 0.0 if difference == 0 else float(np.copysign(np.inf, difference))
    else:
        z = difference / standard_error
    p_value = float(2 * norm.sf(abs(z)))
    return DelongResult(auc_a, auc_b, difference, standard_error, z, min(p_value, 1.0))
