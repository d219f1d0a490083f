"""Calibration of probe probabilities: expected calibration error, Brier score, log loss, and the
bins of a reliability diagram.

Conventions (each written so a report can quote it):
- ECE: top-label confidence (the largest class probability) in `N_BINS` = 15 equal-width bins,
  bin b holding confidences in (b/15, (b+1)/15] (Guo et al. 2017, "On calibration of modern neural
  networks", and their reference code, which compare `lo < c <= hi`; torchmetrics bins [lo, hi)
  and gives confidence 1 a bin of its own). The edges are the exact fractions b/15, not a rounded
  `linspace`, so a confidence's bin does not depend on the dtype the edges would be rounded to.
  The reliability diagram uses the same bins. ECE = sum over bins of (n_b/N)·|acc_b - conf_b|
  (Naeini et al. 2015). Multi-label: the mean over labels of each label's binary ECE on its known
  images, a binary ECE being the top-label ECE of the two-class probabilities [1 - p, p].
- Brier: multi-class, the mean over images of sum_k (p_k - y_k)² (range [0, 2]); two classes,
  half of that, (p_positive - y)² (range [0, 1]), as `sklearn.metrics.brier_score_loss` does for
  each. Multi-label: the mean over labels of the binary Brier score on the label's known images.
- Log loss: -mean log p_true from the probabilities, clipped to [eps, 1 - eps] with eps the
  machine epsilon of their own dtype, as scikit-learn 1.9's `log_loss`: an underflowing float32
  true-class probability costs 15.9 nats (eps 1.2e-7), not float64's 36 (older scikit-learn: 1e-15).
  Multi-label: the mean over labels of the binary log loss on known images.

Every statistic is computed once, from multiplicity weights: `*_resampled` functions take
`counts` (B, N), how many times each test image appears in each bootstrap resample, and return
(B,) values from one pass of matrix products over them (`weighted_sums`); the plain functions are
the one resample that holds every image once. The bootstrap and the reported value therefore
share one definition.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from medprobe.probe.stats.weighted_sums import WeightedSums

N_BINS = 15
CALIBRATION_METRICS = ("ece", "brier", "log_loss")


@dataclass(frozen=True)
class ReliabilityBins:
    """One reliability diagram: per bin of top-label confidence, its mean confidence, its accuracy
    and how many predictions fell in it (NaN confidence and accuracy for an empty bin)."""

    edges: np.ndarray  # (n_bins + 1,) float64, 0 to 1
    confidence: np.ndarray  # (n_bins,) float64, mean top-label confidence
    accuracy: np.ndarray  # (n_bins,) float64, fraction of top-label predictions that were right
    count: np.ndarray  # (n_bins,) int64

    @property
    def ece(self) -> float:
        """sum_b (n_b/N)·|accuracy_b - confidence_b| over the non-empty bins."""
        filled = self.count > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float((self.count[filled] * gaps).sum() / self.count.sum())


def bin_index(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """(N,) int64 bin of each confidence: b such that b/n < confidence <= (b+1)/n, with the
    exact fractions as edges (a confidence of exactly 0 goes to the first bin). ceil(n·c) rounds
    for a float64 c (0.4·10 is 4.0 though the double 0.4 exceeds 2/5), so the candidate is
    checked by the sign of n·c - m computed exactly: c = hi + lo with hi its float32 rounding,
    n·hi and n·hi - m are exact, and lo·n only carries the sign of the remainder."""
    value = np.asarray(confidence, dtype=np.float64)
    high = value.astype(np.float32).astype(np.float64)
    low = value - high  # exact: the two agree to float32's 24 bits

    def above(edge: np.ndarray) -> np.ndarray:  # value > edge / n_bins, exactly
        return (high * n_bins - edge) + low * n_bins > 0

    edge = np.ceil(value * n_bins)
    edge = np.where(above(edge), edge + 1, edge)
    edge = np.where(above(edge - 1), edge, edge - 1)
    return np.clip(edge.astype(np.int64) - 1, 0, n_bins - 1)


def top_label(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence (N,) float64 and whether the top label is the true one (N,) bool, for
    labels (N,) int and probabilities (N, K). Ties go to the lowest class, as argmax does."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities.argmax(1)
    return probabilities[np.arange(len(predicted)), predicted], predicted == labels


def binary_top_label(
    positive: np.ndarray, probability: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence and correctness of the two-class probabilities [1 - p, p]: confidence
    max(p, 1 - p); the prediction is positive when p > 0.5 (argmax of [1 - p, p])."""
    probability = np.asarray(probability, dtype=np.float64)
    return np.maximum(probability, 1 - probability), (probability > 0.5) == positive


def brier_terms(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """(N,) float64: sum_k (p_k - y_k)² per image, halved for two classes (see module docstring)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    one_hot = labels[:, None] == np.arange(probabilities.shape[1])[None, :]
    terms = ((probabilities - one_hot) ** 2).sum(1)
    return terms / 2 if probabilities.shape[1] == 2 else terms


def probability_floor(probabilities: np.ndarray) -> float:
    """The log loss's clipping eps: the machine epsilon of the probabilities' dtype (float64's
    for anything that is not a floating array), as scikit-learn's log_loss."""
    dtype = np.asarray(probabilities).dtype
    return float(np.finfo(dtype if np.issubdtype(dtype, np.floating) else np.float64).eps)


def log_loss_terms(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """(N,) float64: -log of the true class's probability, clipped to [eps, 1 - eps] with eps
    `probability_floor` of the input (float32 scores: 1.2e-7)."""
    floor = probability_floor(probabilities)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    true_probability = probabilities[np.arange(len(labels)), labels]
    return -np.log(np.clip(true_probability, floor, 1 - floor))


def add_bins(
    sums: WeightedSums,
    images: np.ndarray,
    confidence: np.ndarray,
    correct: np.ndarray,
    n_bins: int = N_BINS,
) -> Callable[[np.ndarray], np.ndarray]:
    """Reserve, per confidence bin, the weighted sums of confidence and of correctness; returns
    the function that turns them into sum_b |correct_b - confidence_b| (B,), the ECE's numerator
    (sum_b (n_b/N)·|acc_b - conf_b| = sum_b |correct_b - conf_b| / N)."""
    bins = bin_index(confidence, n_bins)
    first = sums.add(images, confidence, bins, n_bins)
    second = sums.add(images, correct, bins, n_bins)

    def gaps(table: np.ndarray) -> np.ndarray:
        confidence_sums = table[first : first + n_bins]
        correct_sums = table[second : second + n_bins]
        return np.abs(correct_sums - confidence_sums).sum(0)

    return gaps


def add_calibration(
    sums: WeightedSums,
    labels: np.ndarray,
    probabilities: np.ndarray,
    n_bins: int = N_BINS,
    *,
    metrics: Sequence[str] = CALIBRATION_METRICS,
) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Reserve a single-label probe's calibration sums in `sums`; returns the function that turns
    the computed sums (n_slots, B) into {metric: (B,) float64} for `metrics` (of ece, brier,
    log_loss: a subgroup reports only the ECE, and a slot not reserved is not summed).

    labels (N,) int; probabilities (N, K), rows summing to 1."""
    images = np.arange(len(labels))
    readers = {}
    if "ece" in metrics:
        readers["ece"] = add_bins(sums, images, *top_label(labels, probabilities), n_bins)
    for name, terms in (("brier", brier_terms), ("log_loss", log_loss_terms)):
        if name in metrics:
            readers[name] = _row(sums.add(images, terms(labels, probabilities)))
    total = sums.add(images)

    def finish(table: np.ndarray) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return {name: read(table) / table[total] for name, read in readers.items()}

    return finish


def add_multilabel_calibration(
    sums: WeightedSums,
    labels: np.ndarray,
    probabilities: np.ndarray,
    n_bins: int = N_BINS,
    *,
    metrics: Sequence[str] = CALIBRATION_METRICS,
) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Reserve a multi-label probe's calibration sums; the returned function gives the mean over
    labels of the binary ECE, Brier score and log loss (those of `metrics`), (B,) float64 each.

    labels (N, L) int with -1 unknown; probabilities (N, L) positive-class probabilities, a column
    of NaN for a label no probe was trained for (left out). Each label counts its known images
    only; a label none of whose known images a resample draws is left out of that resample's
    mean."""
    floor = probability_floor(probabilities)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    per_label = []
    for column in _scored_columns(probabilities):
        images = np.flatnonzero(labels[:, column] >= 0)
        positive = labels[images, column] == 1
        probability = probabilities[images, column]
        readers = {}
        if "ece" in metrics:
            confidence, correct = binary_top_label(positive, probability)
            readers["ece"] = add_bins(sums, images, confidence, correct, n_bins)
        if "brier" in metrics:
            readers["brier"] = _row(sums.add(images, (probability - positive) ** 2))
        if "log_loss" in metrics:
            clipped = np.clip(probability, floor, 1 - floor)
            loss = -np.log(np.where(positive, clipped, 1 - clipped))
            readers["log_loss"] = _row(sums.add(images, loss))
        per_label.append((readers, sums.add(images)))

    def finish(table: np.ndarray) -> dict[str, np.ndarray]:
        shape = (len(per_label), table.shape[1])
        values = {name: np.full(shape, np.nan) for name in CALIBRATION_METRICS if name in metrics}
        with np.errstate(invalid="ignore", divide="ignore"):
            for position, (readers, total) in enumerate(per_label):
                for name, read in readers.items():
                    values[name][position] = read(table) / table[total]
        return {name: mean_of_finite(value, axis=0) for name, value in values.items()}

    return finish


def _row(slot: int) -> Callable[[np.ndarray], np.ndarray]:
    """The reader of one slot's row of a computed table."""
    return lambda table: table[slot]


def calibration_resampled(
    labels: np.ndarray, probabilities: np.ndarray, counts: np.ndarray, n_bins: int = N_BINS
) -> dict[str, np.ndarray]:
    """ECE, Brier score and log loss of a single-label probe on each resample: labels (N,) int,
    probabilities (N, K), counts (B, N) int multiplicities -> {name: (B,) float64}."""
    sums = WeightedSums(len(labels))
    finish = add_calibration(sums, labels, probabilities, n_bins)
    return finish(sums.compute(counts))


def multilabel_calibration_resampled(
    labels: np.ndarray, probabilities: np.ndarray, counts: np.ndarray, n_bins: int = N_BINS
) -> dict[str, np.ndarray]:
    """Mean over labels of the binary ECE, Brier score and log loss on each resample: labels
    (N, L) with -1 unknown, probabilities (N, L), counts (B, N) -> {name: (B,) float64}."""
    sums = WeightedSums(len(labels))
    finish = add_multilabel_calibration(sums, labels, probabilities, n_bins)
    return finish(sums.compute(counts))


def expected_calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, n_bins: int = N_BINS
) -> float:
    """Top-label ECE of a single-label probe: labels (N,) int, probabilities (N, K)."""
    return float(calibration_resampled(labels, probabilities, _once(labels), n_bins)["ece"][0])


def multilabel_expected_calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, n_bins: int = N_BINS
) -> float:
    """Mean over labels of the binary ECE: labels (N, L) with -1 unknown, probabilities (N, L)."""
    values = multilabel_calibration_resampled(labels, probabilities, _once(labels), n_bins)
    return float(values["ece"][0])


def brier_score(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Multi-class Brier score (two classes: the binary one); labels (N,), probabilities (N, K)."""
    return float(calibration_resampled(labels, probabilities, _once(labels))["brier"][0])


def multilabel_brier_score(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean over labels of the binary Brier score on each label's known images."""
    return float(multilabel_calibration_resampled(labels, probabilities, _once(labels))["brier"][0])


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean -log p_true, clipped like scikit-learn's; labels (N,), probabilities (N, K)."""
    return float(calibration_resampled(labels, probabilities, _once(labels))["log_loss"][0])


def multilabel_log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean over labels of the binary log loss on each label's known images."""
    values = multilabel_calibration_resampled(labels, probabilities, _once(labels))
    return float(values["log_loss"][0])


def calibration_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """{"ece", "brier", "log_loss"} of a single-label probe, as rows of results.csv."""
    values = calibration_resampled(labels, probabilities, _once(labels))
    return {name: float(value[0]) for name, value in values.items()}


def multilabel_calibration_metrics(
    labels: np.ndarray, probabilities: np.ndarray
) -> dict[str, float]:
    """{"ece", "brier", "log_loss"} of a multi-label probe, each the mean over labels."""
    values = multilabel_calibration_resampled(labels, probabilities, _once(labels))
    return {name: float(value[0]) for name, value in values.items()}


def reliability_bins(
    labels: np.ndarray, probabilities: np.ndarray, n_bins: int = N_BINS
) -> ReliabilityBins:
    """The reliability diagram's bins. Single-label: labels (N,), probabilities (N, K), top-label
    confidence. Multi-label: labels (N, L) with -1 unknown, probabilities (N, L); every known
    (image, label) pair of a scored label is pooled into one diagram of the two-class top label
    (the multi-label ECE instead averages per-label ECEs, so it is not this diagram's `ece`)."""
    if labels.ndim == 1:
        confidence, correct = top_label(labels, probabilities)
    else:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        columns = _scored_columns(probabilities)
        known = (labels[:, columns] >= 0).ravel(order="F")
        confidence, correct = binary_top_label(
            labels[:, columns].ravel(order="F")[known] == 1,
            probabilities[:, columns].ravel(order="F")[known],
        )
    bins = bin_index(confidence, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, confidence, minlength=n_bins) / count
        accuracy = np.bincount(bins, correct.astype(np.float64), minlength=n_bins) / count
    return ReliabilityBins(np.linspace(0.0, 1.0, n_bins + 1), mean_confidence, accuracy, count)


def mean_of_finite(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over `axis` of the finite entries; NaN (without a warning) where there are none."""
    finite = np.isfinite(values)
    n_finite = finite.sum(axis)
    total = np.where(finite, values, 0.0).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_finite > 0, total / n_finite, np.nan)


def _scored_columns(probabilities: np.ndarray) -> np.ndarray:
    """Columns with probabilities for every image (NaN marks a label no probe was trained for)."""
    return np.flatnonzero(~np.isnan(probabilities).any(0))


def _once(labels: np.ndarray) -> np.ndarray:
    """The multiplicities of the test set itself: one resample holding every image once."""
    return np.ones((1, len(labels)), dtype=np.int32)
