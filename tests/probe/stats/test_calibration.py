"""ECE, Brier score and log loss against hand-computed values, scikit-learn, and plain loops."""

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss
from sklearn.metrics import log_loss as sklearn_log_loss

from medprobe.probe.stats.calibration import (
    add_calibration,
    add_multilabel_calibration,
    bin_index,
    brier_score,
    calibration_metrics,
    calibration_resampled,
    expected_calibration_error,
    log_loss,
    multilabel_brier_score,
    multilabel_calibration_metrics,
    multilabel_calibration_resampled,
    multilabel_expected_calibration_error,
    multilabel_log_loss,
    reliability_bins,
)
from medprobe.probe.stats.weighted_sums import WeightedSums

# Six images, three classes. Top label, its confidence and the 1/15-wide bin it falls in:
#   image 0: y=0, [.70 .20 .10] -> class 0 at .70, right; bin 10 = (10/15, 11/15] = (.667, .733]
#   image 1: y=1, [.10 .75 .15] -> class 1 at .75, right; bin 11 = (.733, .800]
#   image 2: y=2, [.25 .25 .50] -> class 2 at .50, right; bin 7  = (.467, .533]
#   image 3: y=0, [.30 .50 .20] -> class 1 at .50, wrong; bin 7
#   image 4: y=1, [.45 .35 .20] -> class 0 at .45, wrong; bin 6  = (.400, .467]
#   image 5: y=2, [.05 .05 .90] -> class 2 at .90, right; bin 13 = (.867, .933]
# ECE = sum over bins of (n_b/6)|acc_b - conf_b|:
#   bin 6: 1 image, acc 0, conf .45 -> |0 - .45| = .45
#   bin 7: 2 images, acc 1/2, conf .50 -> 0
#   bin 10: acc 1, conf .70 -> .30;  bin 11: acc 1, conf .75 -> .25;  bin 13: acc 1, conf .90 -> .10
#   ECE = (.45 + 0 + .30 + .25 + .10) / 6 = 1.10 / 6 = 0.183333...
# Brier, sum_k (p_k - y_k)^2 per image:
#   .09+.04+.01 = .14;  .01+.0625+.0225 = .095;  .0625+.0625+.25 = .375;
#   .49+.25+.04 = .78;  .2025+.4225+.04 = .665;  .0025+.0025+.01 = .015;  sum 2.07 -> 0.345
# Log loss, -ln p_true: .356675 .287682 .693147 1.203973 1.049822 .105361; sum 3.696660 -> 0.616110
SIX_LABELS = np.array([0, 1, 2, 0, 1, 2])
SIX_PROBABILITIES = np.array(
    [
        [0.70, 0.20, 0.10],
        [0.10, 0.75, 0.15],
        [0.25, 0.25, 0.50],
        [0.30, 0.50, 0.20],
        [0.45, 0.35, 0.20],
        [0.05, 0.05, 0.90],
    ]
)


def test_six_image_example_by_hand():
    assert expected_calibration_error(SIX_LABELS, SIX_PROBABILITIES) == pytest.approx(1.1 / 6)
    assert brier_score(SIX_LABELS, SIX_PROBABILITIES) == pytest.approx(0.345)
    assert log_loss(SIX_LABELS, SIX_PROBABILITIES) == pytest.approx(0.616110, abs=1e-6)
    bins = reliability_bins(SIX_LABELS, SIX_PROBABILITIES)
    assert bins.count.tolist() == [0] * 6 + [1, 2, 0, 0, 1, 1, 0, 1, 0]
    assert bins.confidence[7] == pytest.approx(0.5)
    assert bins.accuracy[7] == pytest.approx(0.5)
    assert bins.accuracy[6] == 0.0
    assert np.isnan(bins.confidence[0]) and np.isnan(bins.accuracy[0])
    assert bins.ece == pytest.approx(1.1 / 6)


def test_six_image_example_reweighted_equals_the_repeated_images():
    # image 0 twice, image 3 once, image 5 three times; 1, 2 and 4 left out. By hand:
    # bins 10 (x2, right at .70), 7 (x1, wrong at .50), 13 (x3, right at .90):
    # ECE = (2 * .30 + 1 * .50 + 3 * .10) / 6 = 1.4 / 6
    counts = np.array([[2, 0, 0, 1, 0, 3]])
    resampled = calibration_resampled(SIX_LABELS, SIX_PROBABILITIES, counts)
    assert resampled["ece"][0] == pytest.approx(1.4 / 6)
    repeated = np.repeat(np.arange(6), counts[0])
    direct = calibration_metrics(SIX_LABELS[repeated], SIX_PROBABILITIES[repeated])
    for name, value in direct.items():
        assert resampled[name][0] == pytest.approx(value, rel=1e-12)


def test_bins_are_open_below_and_closed_above():
    # edges k/15: a confidence just above an edge starts the next bin, 1.0 is in the last bin
    edges = np.linspace(0, 1, 16)
    assert bin_index(edges[1:] - 1e-9).tolist() == list(range(15))
    assert bin_index(edges[1:-1] + 1e-9).tolist() == list(range(1, 15))
    assert bin_index(np.array([0.0, 1.0])).tolist() == [0, 14]


def reference_ece(confidence, correct, n_bins=15):
    """The definition as a loop: bins (k/n, (k+1)/n], sum of (n_b/N)|acc_b - conf_b|."""
    total = 0.0
    for k in range(n_bins):
        inside = (confidence > k / n_bins) & (confidence <= (k + 1) / n_bins)
        if k == 0:
            inside |= confidence == 0
        if inside.any():
            gap = abs(correct[inside].mean() - confidence[inside].mean())
            total += inside.sum() / len(confidence) * gap
    return total


@pytest.mark.parametrize("n_classes", [2, 4])
def test_against_scikit_learn_and_the_plain_loop(n_classes):
    rng = np.random.default_rng(n_classes)
    labels = rng.integers(0, n_classes, 500)
    probabilities = rng.dirichlet(np.ones(n_classes), 500)
    predicted = probabilities.argmax(1)
    confidence = probabilities.max(1)
    assert expected_calibration_error(labels, probabilities) == pytest.approx(
        reference_ece(confidence, (predicted == labels).astype(float))
    )
    assert log_loss(labels, probabilities) == pytest.approx(
        sklearn_log_loss(labels, probabilities, labels=range(n_classes))
    )
    one_hot = np.eye(n_classes)[labels]
    summed = ((probabilities - one_hot) ** 2).sum(1).mean()
    if n_classes == 2:  # the binary convention is scikit-learn's (p_positive - y)^2
        assert brier_score(labels, probabilities) == pytest.approx(summed / 2)
        assert brier_score(labels, probabilities) == pytest.approx(
            brier_score_loss(labels, probabilities[:, 1])
        )
    else:
        assert brier_score(labels, probabilities) == pytest.approx(summed)


def test_log_loss_clips_a_zero_probability_as_scikit_learn():
    labels = np.array([0, 1])
    probabilities = np.array([[0.0, 1.0], [0.5, 0.5]])
    expected = (-np.log(np.finfo(np.float64).eps) - np.log(0.5)) / 2
    assert log_loss(labels, probabilities) == pytest.approx(expected)
    assert log_loss(labels, probabilities) == pytest.approx(sklearn_log_loss(labels, probabilities))


def test_multilabel_is_the_mean_of_binary_metrics_on_known_images():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, (300, 4)).astype(np.int8)
    labels[rng.random((300, 4)) < 0.2] = -1  # unknown
    probabilities = np.clip(0.3 * labels + rng.random((300, 4)) * 0.7, 0, 1)
    probabilities[:, 3] = np.nan  # no probe for this label: left out
    eces, briers, losses = [], [], []
    for column in range(3):
        known = labels[:, column] >= 0
        positive = labels[known, column]
        p = probabilities[known, column]
        # binary ECE: the top label of [1 - p, p]
        eces.append(reference_ece(np.maximum(p, 1 - p), ((p > 0.5) == positive).astype(float)))
        briers.append(brier_score_loss(positive, p))
        losses.append(sklearn_log_loss(positive, p, labels=[0, 1]))
    assert multilabel_expected_calibration_error(labels, probabilities) == pytest.approx(
        np.mean(eces)
    )
    assert multilabel_brier_score(labels, probabilities) == pytest.approx(np.mean(briers))
    assert multilabel_log_loss(labels, probabilities) == pytest.approx(np.mean(losses))


def test_multilabel_binary_ece_by_hand():
    # one label, four known images and one unknown (-1, ignored):
    #   p = .90 positive -> conf .90, right (bin 13: (.867, .933])
    #   p = .25 negative -> conf .75, right (bin 11: (.733, .800])
    #   p = .70 negative -> conf .70, wrong (bin 10: (.667, .733])
    #   p = .55 positive -> conf .55, right (bin 8: (.533, .600])
    # ECE = (.10 + .25 + .70 + .45) / 4 = 0.375
    labels = np.array([[1], [0], [0], [1], [-1]])
    probabilities = np.array([[0.9], [0.25], [0.7], [0.55], [0.99]])
    assert multilabel_expected_calibration_error(labels, probabilities) == pytest.approx(0.375)
    bins = reliability_bins(labels, probabilities)
    assert bins.count.sum() == 4
    assert np.flatnonzero(bins.count).tolist() == [8, 10, 11, 13]
    assert bins.ece == pytest.approx(0.375)


def test_resampled_equals_the_metrics_of_each_repeated_test_set():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 80)
    probabilities = rng.dirichlet(np.ones(3), 80)
    multi_labels = rng.integers(-1, 2, (80, 3)).astype(np.int8)
    multi_probabilities = rng.random((80, 3))
    counts = rng.poisson(1.0, (6, 80)).astype(np.int32)
    single = calibration_resampled(labels, probabilities, counts)
    multi = multilabel_calibration_resampled(multi_labels, multi_probabilities, counts)
    for row, resample in enumerate(counts):
        repeated = np.repeat(np.arange(80), resample)
        direct = calibration_metrics(labels[repeated], probabilities[repeated])
        direct_multi = multilabel_calibration_metrics(
            multi_labels[repeated], multi_probabilities[repeated]
        )
        for name in direct:
            assert single[name][row] == pytest.approx(direct[name], rel=1e-12)
            assert multi[name][row] == pytest.approx(direct_multi[name], rel=1e-12)


@pytest.mark.parametrize("metrics", [("ece",), ("brier", "log_loss"), ("log_loss",)])
def test_a_subset_of_the_metrics_reserves_only_its_own_slots(metrics):
    """A subgroup asks for the ECE alone: it gets the same values, from fewer slots."""
    rng = np.random.default_rng(6)
    labels, probabilities = rng.integers(0, 3, 50), rng.dirichlet(np.ones(3), 50)
    multi_labels = rng.integers(-1, 2, (50, 2)).astype(np.int8)
    counts = rng.poisson(1.0, (4, 50)).astype(np.int32)
    for add, y, p in (
        (add_calibration, labels, probabilities),
        (add_multilabel_calibration, multi_labels, probabilities[:, :2]),
    ):
        every, subset = WeightedSums(50), WeightedSums(50)
        all_values = add(every, y, p)(every.compute(counts))
        values = add(subset, y, p, metrics=metrics)(subset.compute(counts))
        assert list(values) == list(metrics)
        for name in metrics:
            np.testing.assert_array_equal(values[name], all_values[name])
        assert subset.n_slots < every.n_slots


def test_an_empty_resample_is_nan():
    counts = np.zeros((1, 6), dtype=np.int32)
    values = calibration_resampled(SIX_LABELS, SIX_PROBABILITIES, counts)
    assert all(np.isnan(value[0]) for value in values.values())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_loss_clips_at_the_probabilities_own_eps_as_scikit_learn(dtype):
    """float32 scores whose true-class probability underflows (to 0 or to a float32 subnormal)
    are clipped at float32's eps (1.2e-7), as sklearn.metrics.log_loss does, not at float64's."""
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=30.0, size=(60, 4))  # many true-class probabilities below 1e-7
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities = (probabilities / probabilities.sum(1, keepdims=True)).astype(dtype)
    labels = rng.integers(0, 4, 60)
    picked = probabilities[np.arange(60), labels]
    assert (picked < np.finfo(np.float32).eps).sum() > 10
    # scikit-learn sums in the input's dtype: float32 rounding (1e-7 relative) is its own.
    rel = 1e-6 if dtype is np.float32 else 1e-12
    expected = sklearn_log_loss(labels, probabilities, labels=range(4))
    assert log_loss(labels, probabilities) == pytest.approx(expected, rel=rel)
    binary = probabilities[:, :2] / probabilities[:, :2].sum(1, keepdims=True)
    positive = (labels % 2).astype(np.int8)[:, None]
    expected = sklearn_log_loss(positive[:, 0], binary.astype(dtype)[:, 1], labels=[0, 1])
    assert multilabel_log_loss(positive, binary.astype(dtype)[:, 1:]) == pytest.approx(
        expected, rel=rel
    )


def guo_bins(confidence, n_bins):
    """Guo et al.'s loop, with the edges as exact fractions: lo < c <= hi."""
    from fractions import Fraction

    bins = np.full(len(confidence), -1)
    for b in range(n_bins):
        lo, hi = Fraction(b, n_bins), Fraction(b + 1, n_bins)
        for i, c in enumerate(confidence):
            if lo < Fraction(float(c)) <= hi or (b == 0 and c == 0):
                bins[i] = b
    return bins


@pytest.mark.parametrize("n_bins", [4, 10, 15])
def test_confidences_on_bin_edges_follow_guo_et_al(n_bins):
    """(lo, hi] at the exact edges b/n, in float32 and float64, in the ECE and the diagram."""
    edges = np.arange(n_bins + 1) / n_bins
    on_edges = [
        np.concatenate([edges, np.nextafter(edges, 2), np.nextafter(edges, -1)]).astype(dtype)
        for dtype in (np.float64, np.float32)
    ]
    for confidence in on_edges:
        confidence = np.clip(confidence, 1 / 3, 1)  # reachable as a top-label confidence
        np.testing.assert_array_equal(bin_index(confidence, n_bins), guo_bins(confidence, n_bins))
    # The ECE and the diagram with confidences exactly on edges, against the plain loop's ECE.
    confidence = np.array([0.5, 0.5, 0.75, 0.75, 1.0, 1.0, 0.5, 0.75], dtype=np.float32)
    correct = np.array([1, 0, 1, 1, 1, 1, 0, 0], dtype=bool)
    probabilities = np.stack([confidence, 1 - confidence], 1)
    labels = np.where(correct, 0, 1)
    bins = guo_bins(confidence, 4)
    expected = sum(
        (bins == b).sum() / 8 * abs(correct[bins == b].mean() - confidence[bins == b].mean())
        for b in np.unique(bins)
    )
    assert expected_calibration_error(labels, probabilities, 4) == pytest.approx(expected)
    diagram = reliability_bins(labels, probabilities, 4)
    np.testing.assert_array_equal(diagram.count, np.bincount(bins, minlength=4))
    # torchmetrics' binning ([lo, hi): bucketize(right=True) - 1) differs exactly at the edges.
    tm_bins = np.searchsorted(edges_of(4), confidence, side="right") - 1
    assert (tm_bins != bins).sum() == len(confidence)  # every one of these sits on an edge
    off_edge = np.nextafter(confidence, 0).astype(np.float32)
    np.testing.assert_array_equal(
        bin_index(off_edge, 4), np.searchsorted(edges_of(4), off_edge, side="right") - 1
    )


def edges_of(n_bins):
    return np.arange(n_bins + 1) / n_bins
