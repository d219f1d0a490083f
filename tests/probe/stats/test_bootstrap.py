"""The test-set bootstrap: resampled metrics equal the plain ones on the resampled images, the
cluster bootstrap keeps groups whole, and the intervals cover a known truth as often as promised."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)

from medprobe.cache.errors import ToolkitError
from medprobe.probe.stats.bootstrap import (
    bootstrap_multilabel,
    bootstrap_single_label,
    paired_difference,
    percentile_interval,
    resample_counts,
    seeds_and_resamples_interval,
)
from medprobe.probe.stats.calibration import calibration_metrics, multilabel_calibration_metrics
from medprobe.probe.stats.metrics import multilabel_metrics, single_label_metrics


def single_label_task(n_images: int, n_classes: int, seed: int):
    """Labels and probabilities rounded to one decimal, so that AUROC meets many ties."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_images)
    scores = rng.random((n_images, n_classes)).round(1) + 0.01
    scores[np.arange(n_images), labels] += 0.3
    return labels, scores / scores.sum(1, keepdims=True)


def multilabel_task(n_images: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (n_images, 4)).astype(np.int8)
    labels[rng.random((n_images, 4)) < 0.15] = -1
    scores = np.clip(0.3 * labels + rng.random((n_images, 4)), 0, 1).round(2)
    scores[:, 2] = np.nan  # a label no probe was trained for
    labels[:, 3] = np.where(labels[:, 3] == 1, 0, labels[:, 3])  # no positives: no AUROC
    return labels, scores


NAMES = ["a", "b", "c", "d"]


# --- resampling ---------------------------------------------------------------------------------


def test_resample_counts_draw_n_images_with_replacement_reproducibly():
    counts = resample_counts(50, 300, seed=7)
    assert counts.shape == (300, 50) and counts.dtype == np.int32
    assert (counts.sum(1) == 50).all()
    assert (counts == 0).any(1).all()  # with replacement: some image is missed every time
    np.testing.assert_array_equal(counts, resample_counts(50, 300, seed=7))
    assert not np.array_equal(counts, resample_counts(50, 300, seed=8))
    # each image is drawn Binomial(50, 1/50) times: mean 1, variance 0.98
    assert counts.mean() == pytest.approx(1.0)
    assert counts.var() == pytest.approx(0.98, rel=0.05)


def test_cluster_bootstrap_never_splits_a_group():
    rng = np.random.default_rng(0)
    groups = rng.choice(np.array([f"patient{i:02d}" for i in range(30)]), 200)
    counts = resample_counts(200, 500, seed=1, groups=groups)
    names, group_of = np.unique(groups, return_inverse=True)
    sizes = np.bincount(group_of)
    for resample in counts:
        per_group = [np.unique(resample[group_of == g]) for g in range(len(names))]
        assert all(len(values) == 1 for values in per_group)  # every member drawn alike
        draws = np.array([values[0] for values in per_group])
        assert draws.sum() == len(names)  # as many groups drawn as there are
        assert resample.sum() == (draws * sizes).sum()
    assert len(np.unique(counts.sum(1))) > 1  # resample sizes vary with the groups drawn


def test_groups_of_one_image_each_are_the_plain_bootstrap():
    np.testing.assert_array_equal(
        resample_counts(40, 20, seed=3, groups=np.arange(40)), resample_counts(40, 20, seed=3)
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n_images": 0, "n_resamples": 10}, "n_images=0: a bootstrap needs at least one"),
        ({"n_images": 5, "n_resamples": 0}, "n_resamples=0: must be at least 1"),
    ],
)
def test_resample_counts_errors_name_the_value(arguments, message):
    with pytest.raises(ToolkitError, match=message) as error:
        resample_counts(**arguments, seed=0)
    assert error.value.argument == next(iter(k for k, v in arguments.items() if v == 0))


# --- metrics under multiplicity weights -----------------------------------------------------------


@pytest.mark.parametrize(
    ("n_classes", "kind", "headline"),
    [(2, "binary", "roc_auc"), (5, "ordinal", "quadratic_kappa"), (4, "multiclass", "roc_auc")],
)
def test_all_ones_reproduce_the_plain_metrics_exactly(n_classes, kind, headline):
    labels, scores = single_label_task(300, n_classes, seed=n_classes)
    values = bootstrap_single_label(
        labels, scores, np.ones((3, 300), np.int32), kind, headline=headline
    )
    expected = single_label_metrics(labels, scores, kind, headline=headline)
    assert list(values)[: len(expected)] == list(expected)
    for name, value in expected.items():
        assert (values[name] == value).all(), name  # the same arithmetic, bit for bit
    for name, value in calibration_metrics(labels, scores).items():
        np.testing.assert_allclose(values[name], value, rtol=1e-12)


def test_each_resample_scores_the_repeated_test_set():
    labels, scores = single_label_task(120, 3, seed=1)
    counts = resample_counts(120, 8, seed=2)
    values = bootstrap_single_label(labels, scores, counts, "ordinal")
    for row, resample in enumerate(counts):
        repeated = np.repeat(np.arange(120), resample)
        expected = {
            **single_label_metrics(labels[repeated], scores[repeated], "ordinal"),
            **calibration_metrics(labels[repeated], scores[repeated]),
        }
        for name, value in expected.items():
            assert values[name][row] == pytest.approx(value, rel=1e-12), name


def test_weights_equal_scikit_learn_sample_weight():
    labels, scores = single_label_task(150, 4, seed=3)
    predicted = scores.argmax(1)
    counts = resample_counts(150, 5, seed=4)
    values = bootstrap_single_label(labels, scores, counts, "ordinal", headline="roc_auc")
    for row, weight in enumerate(counts):
        assert values["accuracy"][row] == pytest.approx(
            accuracy_score(labels, predicted, sample_weight=weight)
        )
        assert values["balanced_accuracy"][row] == pytest.approx(
            balanced_accuracy_score(labels, predicted, sample_weight=weight)
        )
        assert values["macro_f1"][row] == pytest.approx(
            f1_score(
                labels,
                predicted,
                labels=range(4),
                average="macro",
                sample_weight=weight,
                zero_division=0,
            )
        )
        assert values["quadratic_kappa"][row] == pytest.approx(
            cohen_kappa_score(labels, predicted, weights="quadratic", sample_weight=weight)
        )
        per_class = [
            roc_auc_score(labels == c, scores[:, c], sample_weight=weight) for c in range(4)
        ]
        assert values["roc_auc"][row] == pytest.approx(np.mean(per_class))


def test_binary_auroc_under_weights_equals_scikit_learn():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 400)
    positive = np.clip(0.2 * labels + rng.random(400), 0, 1).round(2)  # ties
    scores = np.stack([1 - positive, positive], axis=1)
    counts = resample_counts(400, 6, seed=6)
    values = bootstrap_single_label(labels, scores, counts, "binary")
    for row, weight in enumerate(counts):
        expected = roc_auc_score(labels, positive, sample_weight=weight)
        assert values["roc_auc"][row] == pytest.approx(expected, rel=1e-12)


def test_a_resample_without_a_class_gives_what_the_plain_metric_gives_without_it():
    labels = np.array([0, 0, 1, 1, 2, 2])
    scores = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.8 + 0.2 / 3
    counts = np.array([[1, 1, 0, 0, 1, 1]])  # class 1 not drawn
    values = bootstrap_single_label(labels, scores, counts, "multiclass")
    kept = np.array([0, 1, 4, 5])
    expected = single_label_metrics(labels[kept], scores[kept], "multiclass")
    for name in ("balanced_accuracy", "macro_f1", "macro_auroc"):
        assert values[name][0] == pytest.approx(expected[name]), name
    # a binary task whose resample draws no positive has no AUROC
    positive = (labels == 0).astype(np.int64)
    binary = np.stack([1 - scores[:, 0], scores[:, 0]], axis=1)
    no_positive = np.array([[0, 0, 1, 1, 1, 1]])
    assert np.isnan(bootstrap_single_label(positive, binary, no_positive, "binary")["roc_auc"][0])


def test_multilabel_all_ones_and_repeated_test_sets():
    labels, scores = multilabel_task(200, seed=7)
    expected = multilabel_metrics(labels, scores, NAMES, competition_labels=["a", "c"])
    ones = bootstrap_multilabel(
        labels, scores, np.ones((2, 200), np.int32), NAMES, competition_labels=["a", "c"]
    )
    assert list(ones)[: len(expected)] == list(expected)
    assert "auroc[c]" not in ones and "auroc[d]" not in ones
    for name, value in expected.items():
        assert (ones[name] == value).all(), name
    for name, value in multilabel_calibration_metrics(labels, scores).items():
        np.testing.assert_allclose(ones[name], value, rtol=1e-12)
    counts = resample_counts(200, 6, seed=8)
    values = bootstrap_multilabel(labels, scores, counts, NAMES, competition_labels=["a", "c"])
    for row, resample in enumerate(counts):
        repeated = np.repeat(np.arange(200), resample)
        direct = {
            **multilabel_metrics(labels[repeated], scores[repeated], NAMES, ["a", "c"]),
            **multilabel_calibration_metrics(labels[repeated], scores[repeated]),
        }
        for name, value in direct.items():
            assert values[name][row] == pytest.approx(value, rel=1e-12), name


def test_multilabel_label_without_both_outcomes_is_left_out_of_that_resample():
    # label a: positives at .9 and .7, negatives at .1 and .4
    # label b: positives at .8 and .2, negatives at .3 and .6
    labels = np.array([[1, 1], [0, 0], [1, 0], [0, 1]], dtype=np.int8)
    scores = np.array([[0.9, 0.8], [0.1, 0.3], [0.7, 0.6], [0.4, 0.2]])
    counts = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]])
    values = bootstrap_multilabel(labels, scores, counts, ["a", "b"])
    # images 0, 1: a .9 > .1 and b .8 > .3, both 1
    assert values["auroc[a]"][0] == 1.0 and values["auroc[b]"][0] == 1.0
    # images 2, 3: a .7 > .4 gives 1; b's positive .2 < negative .6 gives 0; mean 0.5
    assert values["auroc[a]"][1] == 1.0 and values["auroc[b]"][1] == 0.0
    assert values["mean_auroc"][1] == 0.5
    # images 0, 2: a has two positives and no negative (NaN, left out); b .8 > .6 gives 1
    assert np.isnan(values["auroc[a]"][2]) and values["mean_auroc"][2] == 1.0


# --- intervals and paired differences -------------------------------------------------------------


def test_percentile_interval_is_numpys_percentile_without_nan():
    values = np.array([0.3, np.nan, 0.1, 0.5, 0.2, np.nan, 0.4])
    finite = values[~np.isnan(values)]
    assert percentile_interval(values, 0.9) == pytest.approx(tuple(np.percentile(finite, [5, 95])))
    assert all(np.isnan(percentile_interval(np.full(4, np.nan))))
    with pytest.raises(ToolkitError, match=r"level=1\.5: a confidence level is a fraction"):
        percentile_interval(values, 1.5)


def test_paired_difference_by_hand():
    a = np.array([0.80, 0.82, 0.79, 0.85, 0.81, 0.80, 0.83, 0.84, 0.78])
    b = np.array([0.78, 0.80, 0.80, 0.81, 0.79, 0.80, 0.80, 0.80, 0.77])
    # d = .02 .02 -.01 .04 .02 0 .03 .04 .01: one below zero, one at zero, seven above
    # p = 2 * min(1 + #{d <= 0}, 1 + #{d >= 0}) / (R + 1) = 2 * min(3, 9) / 10 = 0.6
    mean, low, high, p_value = paired_difference(a, b)
    assert mean == pytest.approx(np.mean(a - b))
    assert (low, high) == pytest.approx(tuple(np.percentile(a - b, [2.5, 97.5])))
    assert p_value == pytest.approx(0.6)
    assert paired_difference(a, a)[1:] == (0.0, 0.0, 1.0)
    assert paired_difference(a + 1, a)[3] == pytest.approx(2 / 10)  # the smallest it can be


@pytest.mark.slow  # 200 simulated test sets x 1,000 resamples: ~1 s
def test_interval_covers_a_known_accuracy_about_95_percent_of_the_time():
    """200 test sets of 200 images, each image right with probability 0.8, 1,000 resamples each:
    the 95 % percentile interval of the accuracy should hold 0.8 in 90-99 % of the test sets."""
    rng = np.random.default_rng(2024)
    covered = 0
    for repetition in range(200):
        labels = rng.integers(0, 2, 200)
        right = rng.random(200) < 0.8
        predicted = np.where(right, labels, 1 - labels)
        scores = np.where(predicted[:, None] == np.arange(2), 0.7, 0.3)
        counts = resample_counts(200, 1000, seed=repetition)
        accuracy = bootstrap_single_label(labels, scores, counts, "binary", calibration=False)
        low, high = percentile_interval(accuracy["accuracy"])
        covered += low <= 0.8 <= high
    assert 0.90 <= covered / 200 <= 0.99


@pytest.mark.slow  # 200 simulated test sets x 1,000 resamples: ~1 s
def test_cluster_bootstrap_covers_where_the_image_bootstrap_does_not():
    """30 patients of 8 images each; a patient's images share its accuracy, drawn from
    Beta(2, 0.5) (mean 0.8). Resampling patients keeps the nominal coverage; resampling images
    as if independent makes the interval too narrow."""
    rng = np.random.default_rng(11)
    groups = np.repeat(np.arange(30), 8)
    covered_clusters = covered_images = 0
    for repetition in range(200):
        patient_accuracy = rng.beta(2.0, 0.5, 30)
        right = (rng.random(240) < patient_accuracy[groups]).astype(np.int64)
        clustered = resample_counts(240, 1000, seed=repetition, groups=groups)
        independent = resample_counts(240, 1000, seed=repetition)
        low, high = percentile_interval(clustered @ right / clustered.sum(1))
        covered_clusters += low <= 0.8 <= high
        low, high = percentile_interval(independent @ right / 240)
        covered_images += low <= 0.8 <= high
    assert 0.90 <= covered_clusters / 200 <= 0.99
    assert covered_images / 200 < 0.85


@pytest.mark.slow  # 200 simulated test sets x 1,000 resamples: ~1 s
def test_seeds_and_resamples_interval_covers_the_mean_over_support_sets():
    """Ten seeds whose probes share each image's difficulty, each seed with its own offset:
    right = z_i + delta_s + noise > -0.8. The truth, the accuracy expected over support sets and
    test images, is Phi(0.8 / sqrt(1 + 0.3^2 + 0.5^2))."""
    rng = np.random.default_rng(5)
    truth = norm.cdf(0.8 / np.sqrt(1 + 0.3**2 + 0.5**2))
    covered = 0
    for repetition in range(200):
        difficulty = rng.normal(size=200)
        offset = rng.normal(0, 0.3, 10)
        noise = rng.normal(0, 0.5, (10, 200))
        right = (difficulty + offset[:, None] + noise > -0.8).astype(np.int64)
        counts = resample_counts(200, 1000, seed=repetition)
        values = right @ counts.T / 200  # (seeds, resamples)
        low, high = seeds_and_resamples_interval(values, seed=repetition)
        covered += low <= truth <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_one_seed_is_the_test_set_interval():
    values = np.random.default_rng(0).random((1, 500))
    assert seeds_and_resamples_interval(values) == percentile_interval(values[0])
