"""DeLong's paired test against the placement values written out pair by pair, a published AUROC,
scikit-learn, its null distribution, and the bootstrap."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from medprobe.probe.stats.bootstrap import bootstrap_single_label, resample_counts
from medprobe.probe.stats.delong import delong_paired


def reference_delong(positive, scores_a, scores_b):
    """DeLong, DeLong & Clarke-Pearson (1988) as written: psi(x, y) = 1 if x > y, 1/2 if equal,
    0 otherwise; V10_i = mean_j psi(X_i, Y_j) over negatives, V01_j = mean_i psi(X_i, Y_j) over
    positives; AUC = mean V10; S10, S01 the sample covariances (m - 1, n - 1) of the two
    classifiers' V10 and V01; var(AUC_a - AUC_b) = (S10_aa + S10_bb - 2 S10_ab) / m + (same) / n.
    O(m n) comparisons, one pair at a time."""
    cases = np.flatnonzero(positive)
    controls = np.flatnonzero(~positive)
    m, n = len(cases), len(controls)
    v10 = np.zeros((2, m))
    v01 = np.zeros((2, n))
    for k, scores in enumerate((scores_a, scores_b)):
        for i, case in enumerate(cases):
            for j, control in enumerate(controls):
                x, y = scores[case], scores[control]
                psi = 1.0 if x > y else 0.5 if x == y else 0.0
                v10[k, i] += psi / n
                v01[k, j] += psi / m
    auc = v10.mean(1)

    def covariance(placements, count, first, second):
        centred = placements - placements.mean(1, keepdims=True)
        return (centred[first] * centred[second]).sum() / (count - 1)

    variance = sum(
        (covariance(v, c, 0, 0) + covariance(v, c, 1, 1) - 2 * covariance(v, c, 0, 1)) / c
        for v, c in ((v10, m), (v01, n))
    )
    z = (auc[0] - auc[1]) / np.sqrt(variance)
    return auc[0], auc[1], np.sqrt(variance), z, 2 * norm.sf(abs(z))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    positive = rng.random(60) < 0.4
    scores_a = (positive * 0.8 + rng.random(60)).round(1)  # rounding makes ties
    scores_b = (positive * 0.4 + rng.random(60)).round(1)
    result = delong_paired(positive, scores_a, scores_b)
    auc_a, auc_b, standard_error, z, p_value = reference_delong(positive, scores_a, scores_b)
    assert result.auc_a == pytest.approx(auc_a)
    assert result.auc_b == pytest.approx(auc_b)
    assert result.difference == pytest.approx(auc_a - auc_b)
    assert result.standard_error == pytest.approx(standard_error)
    assert result.z == pytest.approx(z)
    assert result.p_value == pytest.approx(p_value)
    assert result.auc_a == pytest.approx(roc_auc_score(positive, scores_a))


def test_a_small_worked_example():
    # positives score a (.9, .7, .6), b (.8, .5, .7); negatives a (.3, .6, .2), b (.4, .6, .1)
    # a: V10 = (1, 1, 2.5/3) -> AUC 0.944444; b: V10 = (1, 2/3, 1) -> AUC 0.888889
    positive = np.array([True, True, True, False, False, False])
    scores_a = np.array([0.9, 0.7, 0.6, 0.3, 0.6, 0.2])
    scores_b = np.array([0.8, 0.5, 0.7, 0.4, 0.6, 0.1])
    result = delong_paired(positive, scores_a, scores_b)
    assert result.auc_a == pytest.approx(17 / 18)
    assert result.auc_b == pytest.approx(8 / 9)
    expected = reference_delong(positive, scores_a, scores_b)
    assert (result.standard_error, result.p_value) == pytest.approx(expected[2::2])


def test_hanley_mcneil_ratings_give_the_published_auroc():
    # Hanley & McNeil (1982), Radiology 143:29-36, table 1: 109 CT images rated 1 (definitely
    # normal) to 5 (definitely abnormal); 58 truly normal rated (33, 6, 6, 11, 2), 51 truly
    # abnormal rated (3, 2, 2, 11, 33). Published area: 0.893.
    ratings = np.arange(1, 6)
    scores = np.concatenate(
        [np.repeat(ratings, [33, 6, 6, 11, 2]), np.repeat(ratings, [3, 2, 2, 11, 33])]
    )
    positive = np.arange(109) >= 58
    result = delong_paired(positive, scores, scores)
    assert result.auc_a == pytest.approx(0.893, abs=5e-4)
    _, _, standard_error, _, _ = reference_delong(positive, scores, 6 - scores)
    assert delong_paired(positive, scores, 6 - scores).standard_error == pytest.approx(
        standard_error
    )


def test_degenerate_cases():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    one_class = delong_paired(np.zeros(4, bool), scores, scores[::-1])
    assert all(np.isnan(value) for value in vars(one_class).values())
    identical = delong_paired(np.array([False, False, True, True]), scores, scores)
    assert (identical.difference, identical.z, identical.p_value) == (0.0, 0.0, 1.0)
    one_positive = delong_paired(np.array([False, False, False, True]), scores, scores[::-1])
    assert one_positive.auc_a == 1.0 and one_positive.auc_b == 0.0
    assert np.isnan(one_positive.standard_error) and np.isnan(one_positive.p_value)


def test_p_values_are_uniform_under_the_null():
    """Two classifiers that are noisy copies of one signal with equal noise have equal AUROCs;
    at the 5 % level the test should reject about 5 % of 400 simulated test sets."""
    rng = np.random.default_rng(9)
    rejected = 0
    for _ in range(400):
        positive = rng.random(150) < 0.3
        signal = positive + rng.normal(0, 1, 150)
        scores_a = signal + rng.normal(0, 0.7, 150)
        scores_b = signal + rng.normal(0, 0.7, 150)
        rejected += delong_paired(positive, scores_a, scores_b).p_value < 0.05
    assert 0.02 <= rejected / 400 <= 0.09


def test_standard_error_agrees_with_the_bootstrap():
    # two independent estimates of the same sampling error: DeLong's asymptotic one and the
    # spread of the paired difference over 2,000 test-set resamples
    rng = np.random.default_rng(4)
    labels = (rng.random(1000) < 0.35).astype(np.int64)
    signal = labels + rng.normal(0, 1, 1000)
    scores_a = 1 / (1 + np.exp(-(signal + rng.normal(0, 0.5, 1000))))
    scores_b = 1 / (1 + np.exp(-(0.6 * signal + rng.normal(0, 0.8, 1000))))
    counts = resample_counts(1000, 2000, seed=0)
    aucs = [
        bootstrap_single_label(labels, np.stack([1 - s, s], 1), counts, "binary", calibration=False)
        for s in (scores_a, scores_b)
    ]
    bootstrap_error = np.std(aucs[0]["roc_auc"] - aucs[1]["roc_auc"], ddof=1)
    result = delong_paired(labels == 1, scores_a, scores_b)
    assert result.standard_error == pytest.approx(bootstrap_error, rel=0.1)


def reference_clustered(positive, scores_a, scores_b, groups):
    """Obuchowski (1997) as written, one cluster and one pair at a time: V10_i sums, over the
    positives of cluster i, the fraction of all negatives each outscores (ties half); V01_i sums,
    over its negatives, the fraction of all positives that outscore each; S10, S01, S11 and the
    covariance of the paper's equations; returns (standard error of A - B, p-value)."""
    clusters = list(dict.fromkeys(groups))
    cases, controls = np.flatnonzero(positive), np.flatnonzero(~positive)
    big_m, big_n = len(cases), len(controls)

    def psi(x, y):
        return 1.0 if x > y else 0.5 if x == y else 0.0

    components = []
    for scores in (scores_a, scores_b):
        auc = sum(psi(scores[i], scores[j]) for i in cases for j in controls) / (big_m * big_n)
        v10, v01, m, n = [], [], [], []
        for cluster in clusters:
            mine = [k for k in range(len(groups)) if groups[k] == cluster]
            own_cases = [k for k in mine if positive[k]]
            own_controls = [k for k in mine if not positive[k]]
            v10.append(sum(psi(scores[i], scores[j]) for i in own_cases for j in controls) / big_n)
            v01.append(sum(psi(scores[i], scores[j]) for j in own_controls for i in cases) / big_m)
            m.append(len(own_cases))
            n.append(len(own_controls))
        components.append((auc, np.array(v10), np.array(v01), np.array(m), np.array(n)))
    m, n = components[0][3], components[0][4]
    n_clusters, i10, i01 = len(clusters), int((m > 0).sum()), int((n > 0).sum())

    def cov(a, b):
        auc_a, v10_a, v01_a = components[a][:3]
        auc_b, v10_b, v01_b = components[b][:3]
        s10 = i10 / ((i10 - 1) * big_m) * np.sum((v10_a - m * auc_a) * (v10_b - m * auc_b))
        s01 = i01 / ((i01 - 1) * big_n) * np.sum((v01_a - n * auc_a) * (v01_b - n * auc_b))
        s11_ab = n_clusters / (n_clusters - 1) * np.sum((v10_a - m * auc_a) * (v01_b - n * auc_b))
        s11_ba = n_clusters / (n_clusters - 1) * np.sum((v10_b - m * auc_b) * (v01_a - n * auc_a))
        return s10 / big_m + s01 / big_n + (s11_ab + s11_ba) / (big_m * big_n)

    standard_error = np.sqrt(cov(0, 0) + cov(1, 1) - 2 * cov(0, 1))
    z = (components[0][0] - components[1][0]) / standard_error
    return standard_error, 2 * norm.sf(abs(z))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clustered_test_matches_obuchowskis_equations_written_out(seed):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"patient{i}" for i in range(25)], rng.integers(1, 5, 25))
    rng.shuffle(groups)
    # a patient's images share a tendency, and patients hold both outcomes
    tendency = dict(zip(np.unique(groups), rng.normal(size=25), strict=True))
    shared = np.array([tendency[g] for g in groups])
    positive = rng.random(len(groups)) < 0.4
    scores_a = (positive * 0.8 + shared + rng.random(len(groups))).round(1)  # ties
    scores_b = (positive * 0.4 + shared + rng.random(len(groups))).round(1)
    result = delong_paired(positive, scores_a, scores_b, groups=groups)
    standard_error, p_value = reference_clustered(positive, scores_a, scores_b, groups)
    assert result.auc_a == pytest.approx(roc_auc_score(positive, scores_a))
    assert result.standard_error == pytest.approx(standard_error)
    assert result.p_value == pytest.approx(p_value)


def test_one_image_per_cluster_is_delongs_test_and_copies_of_an_image_add_nothing():
    rng = np.random.default_rng(5)
    positive = rng.random(80) < 0.3
    scores_a = positive * 0.7 + rng.random(80)
    scores_b = positive * 0.5 + rng.random(80)
    plain = delong_paired(positive, scores_a, scores_b)
    singletons = delong_paired(positive, scores_a, scores_b, groups=np.arange(80))
    assert singletons.standard_error == pytest.approx(plain.standard_error, rel=1e-12)
    # Every image three times, the copies one patient: DeLong thinks it has 3x the evidence,
    # the clustered test knows it has not.
    tripled = [np.repeat(values, 3) for values in (positive, scores_a, scores_b)]
    naive = delong_paired(*tripled)
    clustered = delong_paired(*tripled, groups=np.repeat(np.arange(80), 3))
    assert naive.standard_error == pytest.approx(plain.standard_error / np.sqrt(3), rel=0.02)
    assert clustered.standard_error == pytest.approx(plain.standard_error, rel=1e-12)
    assert clustered.p_value == pytest.approx(plain.p_value, rel=1e-9)


def test_clustered_test_needs_two_clusters_of_each_outcome():
    positive = np.array([True, True, False, False, False])
    scores = np.array([0.9, 0.8, 0.1, 0.3, 0.2])
    result = delong_paired(positive, scores, scores[::-1], groups=np.array([1, 1, 2, 2, 3]))
    assert result.auc_a == 1.0 and np.isnan(result.standard_error) and np.isnan(result.p_value)
