"""What one probe's test scores are worth: its metrics (with calibration), the same metrics on
every bootstrap resample of the test set, and the bins of its reliability diagram.

The resamples are drawn once per dataset, over its test ids in sorted order (whole patients or
lesions where the store records groups), and re-ordered to each store's rows: every model,
method, budget and seed of a dataset is scored on the same resamples, so differences are paired.
"""

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from medprobe.probe.stats.bootstrap import (
    bootstrap_multilabel,
    bootstrap_single_label,
    image_clusters,
    resample_counts,
)
from medprobe.probe.stats.calibration import (
    ReliabilityBins,
    calibration_metrics,
    multilabel_calibration_metrics,
    reliability_bins,
)
from medprobe.probe.stats.metrics import multilabel_metrics, single_label_metrics


def resample_seed(dataset: str) -> int:
    """A stable seed per dataset, independent of Python's hash randomisation."""
    digest = hashlib.sha256(f"test-bootstrap|{dataset}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def shared_test_resamples(
    dataset: str, test_ids: np.ndarray, groups: np.ndarray | None, n_resamples: int
) -> np.ndarray:
    """(B, N) int32 multiplicities of the test rows, in the store's row order `test_ids`.

    Drawn over the ids sorted (so every store of the dataset gets the same resamples whatever
    its row order); an image without a group is a group of its own. Laid out image-major (the
    transpose of an (N, B) C-ordered array): every cell's weighted sums read each image's B
    weights as float64 (`WeightedSums.compute`), and converting that layout is a contiguous copy,
    7x faster than transposing a row-major (B, N) array for every cell and subgroup."""
    order = np.argsort(np.asarray(test_ids, dtype=str), kind="stable")
    clusters = image_clusters(groups, test_ids)
    grouped = None if clusters is None else clusters[order]
    counts = resample_counts(len(order), n_resamples, seed=resample_seed(dataset), groups=grouped)
    by_image = np.empty((len(order), n_resamples), dtype=counts.dtype)
    by_image[order] = counts.T
    return by_image.T


@dataclass(frozen=True)
class CellScore:
    """One probe (method, budget, seed) on the test split: metrics, their values on each test
    resample (None without a bootstrap), and its reliability bins."""

    metrics: dict[str, float]
    resampled: dict[str, np.ndarray] | None
    reliability: ReliabilityBins


def score_cell(
    labels: np.ndarray, scores: np.ndarray, task: dict[str, Any], counts: np.ndarray | None
) -> CellScore:
    """labels (N,) int64, scores (N, K) class probabilities; or labels (N, L) int8 with -1
    unknown, scores (N, L) positive-label probabilities (NaN for an untrained label).
    counts: (B, N) from `shared_test_resamples`, or None for no bootstrap."""
    resampled = None
    if task["kind"] == "multilabel":
        names, competition = task["label_names"], task.get("competition_labels", ())
        metrics = multilabel_metrics(labels, scores, names, competition)
        metrics.update(multilabel_calibration_metrics(labels, scores))
        if counts is not None:
            resampled = bootstrap_multilabel(labels, scores, counts, names, competition)
    else:
        headline = task["headline_metric"]
        metrics = single_label_metrics(labels, scores, task["kind"], headline=headline)
        metrics.update(calibration_metrics(labels, scores))
        if counts is not None:
            resampled = bootstrap_single_label(
                labels, scores, counts, task["kind"], headline=headline
            )
    if resampled is not None:
        resampled = {name: values.astype(np.float32) for name, values in resampled.items()}
    return CellScore(metrics, resampled, reliability_bins(labels, scores))
