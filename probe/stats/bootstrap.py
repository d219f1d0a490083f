"""The test-set bootstrap: every metric of `probe.stats.metrics` and `probe.stats.calibration`
on B resamples of the test images at once, percentile intervals, and paired differences with
their p-values.

A resample is a vector of multiplicities, how many times each test image was drawn; the same
(B, N) `counts` from `resample_counts` score every model and method of a (dataset, budget), so
differences between them are paired. Each metric is read off weighted sums over groups of
images (a confusion cell, a tie group of scores, a confidence bin), all computed by one dense
and one sparse matrix product per chunk of resamples (`weighted_sums.WeightedSums`): no Python
loop over resamples, and integer weights keep every count exact. With every multiplicity 1 each
metric equals its plain definition (tests hold them to `probe.stats.metrics` and scikit-learn).
"""

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.probe.stats.calibration import (
    CALIBRATION_METRICS,
    add_calibration,
    add_multilabel_calibration,
    mean_of_finite,
)
from medprobe.probe.stats.weighted_sums import WeightedSums

DEFAULT_RESAMPLES = 1000
# Fewer resamples cannot place a 2.5th and a 97.5th percentile apart from the extremes.
MIN_RESAMPLES = 40
# float64 values held per chunk of resamples (slots x resamples): about 64 MB.
CHUNK_ELEMENTS = 2**23

Reader = Callable[[np.ndarray], np.ndarray]


def image_clusters(groups: np.ndarray | None, ids: np.ndarray) -> np.ndarray | None:
    """(N,) str cluster per image for clustered resampling and tests: its patient or lesion
    (`groups`), or, for an image without one (''), the image itself; None without groups."""
    if groups is None:
        return None
    return np.asarray([g if g else f"image:{i}" for g, i in zip(groups, ids, strict=True)], str)


def resample_counts(
    n_images: int, n_resamples: int, *, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """(B, N) int32 multiplicities: how many times test image i appears in resample b.

    Without groups, each resample draws N images with replacement. With `groups` (N,) (patient
    or lesion ids, any sortable values), each resample draws as many groups as there are, with
    replacement, and every member of a drawn group counts once per draw: a group is never split
    (the cluster bootstrap; Davison & Hinkley 1997, section 3.8). The same arguments give the same
    resamples."""
    if n_images < 1:
        raise ToolkitError(
            f"n_images={n_images}: a bootstrap needs at least one test image", argument="n_images"
        )
    if n_resamples < 1:
        raise ToolkitError(
            f"n_resamples={n_resamples}: must be at least 1 (use 0 only to turn the bootstrap "
            "off before calling it)",
            argument="n_resamples",
        )
    unit_of_image = None
    n_units = n_images
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n_images,):
            raise ValueError(f"groups has shape {groups.shape}; expected ({n_images},)")
        _, unit_of_image = np.unique(groups, return_inverse=True)
        n_units = int(unit_of_image.max()) + 1
    rng = np.random.default_rng(seed)
    unit_counts = np.empty((n_resamples, n_units), dtype=np.int32)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // n_units)
    for start in range(0, n_resamples, rows_per_chunk):
        rows = min(rows_per_chunk, n_resamples - start)
        draws = rng.integers(0, n_units, size=(rows, n_units))
        # one bincount for the whole chunk: resample r's draws are offset into their own range
        draws += (np.arange(rows) * n_units)[:, None]
        flat = np.bincount(draws.ravel(), minlength=rows * n_units)
        unit_counts[start : start + rows] = flat.reshape(rows, n_units)
    return unit_counts if unit_of_image is None else unit_counts[:, unit_of_image]


def bootstrap_single_label(
    labels: np.ndarray,
    scores: np.ndarray,
    counts: np.ndarray,
    kind: str,
    *,
    headline: str = "accuracy",
    calibration: bool = True,
) -> dict[str, np.ndarray]:
    """Every metric of `single_label_metrics(labels, scores, kind, headline=headline)` on each
    resample, plus `ece`, `brier` and `log_loss` when `calibration` (scores are probabilities).

    labels (N,) int; scores (N, K) class probabilities; counts (B, N) int multiplicities.
    Returns {metric: (B,) float64}, NaN where a resample leaves a metric undefined (no class
    with both outcomes for AUROC; kappa's zero denominator)."""
    sums = WeightedSums(len(labels))
    finish = add_single_label(
        sums, labels, scores, kind, headline=headline, calibration=_metrics(calibration)
    )
    return in_chunks(sums, counts, finish)


def add_single_label(
    sums: WeightedSums,
    labels: np.ndarray,
    scores: np.ndarray,
    kind: str,
    *,
    headline: str = "accuracy",
    calibration: Sequence[str] = CALIBRATION_METRICS,
    auroc: bool = True,
) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Reserve `bootstrap_single_label`'s sums for images 0..N-1 of `sums`; returns the function
    that reads its metrics, (B,) each, from a computed table. Without `auroc`, no AUROC slots
    (a class's tie groups are most of the work) and no `macro_auroc` / `roc_auc`; `calibration`
    names the calibration metrics to reserve (none: ())."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n_images, n_classes = scores.shape
    images = np.arange(n_images)
    cells = sums.add(images, 1.0, labels * n_classes + scores.argmax(1), n_classes**2)
    classes = ([1] if n_classes == 2 else range(n_classes)) if auroc else []
    aurocs = [add_auroc(sums, images, labels == c, scores[:, c]) for c in classes]
    finish_calibration = (
        add_calibration(sums, labels, scores, metrics=calibration) if calibration else None
    )
    with_kappa = kind == "ordinal" or headline == "quadratic_kappa"
    with_roc_auc = auroc and (kind == "binary" or n_classes == 2 or headline == "roc_auc")

    def finish(table: np.ndarray) -> dict[str, np.ndarray]:
        matrices = table[cells : cells + n_classes**2].T.reshape(-1, n_classes, n_classes)
        values = confusion_metrics(matrices)
        if aurocs:
            stacked = np.stack([read(table) for read in aurocs])
            values["macro_auroc"] = mean_of_finite(stacked, axis=0)
        if with_kappa:
            values["quadratic_kappa"] = confusion_kappa(matrices)
        if with_roc_auc:
            values["roc_auc"] = values["macro_auroc"].copy()
        if finish_calibration is not None:
            values.update(finish_calibration(table))
        return values

    return finish


def bootstrap_multilabel(
    labels: np.ndarray,
    scores: np.ndarray,
    counts: np.ndarray,
    label_names: Sequence[str],
    competition_labels: Sequence[str] = (),
    *,
    calibration: bool = True,
) -> dict[str, np.ndarray]:
    """Every metric of `multilabel_metrics(labels, scores, label_names, competition_labels)` on
    each resample, plus `ece`, `brier` and `log_loss` (means over labels) when `calibration`.

    labels (N, L) int with -1 unknown; scores (N, L) positive-class probabilities, NaN columns
    for untrained labels; counts (B, N). The keys are those of the unweighted metrics on the
    whole test set; a label a resample leaves without both outcomes is NaN there and left out
    of that resample's means, as the unweighted metrics leave it out."""
    sums = WeightedSums(len(labels))
    finish = add_multilabel(
        sums, labels, scores, label_names, competition_labels, calibration=_metrics(calibration)
    )
    return in_chunks(sums, counts, finish)


def add_multilabel(
    sums: WeightedSums,
    labels: np.ndarray,
    scores: np.ndarray,
    label_names: Sequence[str],
    competition_labels: Sequence[str] = (),
    *,
    calibration: Sequence[str] = CALIBRATION_METRICS,
) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Reserve `bootstrap_multilabel`'s sums for images 0..N-1 of `sums`; returns the function
    that reads its metrics, (B,) each, from a computed table (`calibration` as in
    `add_single_label`)."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    per_label: dict[str, Reader] = {}
    for column in range(labels.shape[1]):
        if np.isnan(scores[:, column]).any():
            continue
        known = np.flatnonzero(labels[:, column] >= 0)
        positive = labels[known, column] == 1
        if positive.all() or not positive.any():
            continue  # no AUROC on the whole test set, so none on any resample
        name = label_names[column] if column < len(label_names) else str(column)
        per_label[name] = add_auroc(sums, known, positive, scores[known, column])
    competition = [name for name in competition_labels if name in per_label]
    finish_calibration = (
        add_multilabel_calibration(sums, labels, scores, metrics=calibration)
        if calibration
        else None
    )

    def finish(table: np.ndarray) -> dict[str, np.ndarray]:
        aurocs = {name: read(table) for name, read in per_label.items()}
        empty = np.full(table.shape[1], np.nan)
        stacked = np.stack(list(aurocs.values())) if aurocs else empty[None]
        values = {"mean_auroc": mean_of_finite(stacked, axis=0)}
        if competition:
            chosen = np.stack([aurocs[name] for name in competition])
            values["mean_auroc_competition"] = mean_of_finite(chosen, axis=0)
        values.update({f"auroc[{name}]": value for name, value in aurocs.items()})
        if finish_calibration is not None:
            values.update(finish_calibration(table))
        return values

    return finish


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval (Efron & Tibshirani 1993, ch. 13): the (1 - level)/2 and
    (1 + level)/2 quantiles of the bootstrap values (B,), NaN values (resamples on which the
    metric is undefined) left out; (NaN, NaN) when none is left."""
    _check_level(level)
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def paired_difference(
    values_a: np.ndarray, values_b: np.ndarray, level: float = 0.95
) -> tuple[float, float, float, float]:
    """(mean difference, low, high, p-value) of a - b over resamples scored on the same counts.

    d_r = values_a[r] - values_b[r] on the R resamples where both are defined. The interval is
    the percentile interval of d. The p-value is the two-sided test of "no difference" that
    inverts that interval (the smallest alpha whose (1 - alpha) percentile interval excludes 0;
    Hall 1992, section 3.12; R's boot.pval), with the +1 correction of Monte Carlo p-values
    (Davison & Hinkley 1997, ch. 4; North, Curtis & Sham 2002, Am. J. Hum. Genet. 71:439):
        p = min(1, 2 * min(1 + #{d_r <= 0}, 1 + #{d_r >= 0}) / (R + 1)).
    It is never below 2/(R + 1), and is 1 when every d_r is 0 (two identical entries)."""
    difference = np.asarray(values_a, dtype=np.float64) - np.asarray(values_b, dtype=np.float64)
    difference = difference[~np.isnan(difference)]
    if len(difference) == 0:
        return float("nan"), float("nan"), float("nan"), float("nan")
    low, high = percentile_interval(difference, level)
    at_most_zero = 1 + int((difference <= 0).sum())
    at_least_zero = 1 + int((difference >= 0).sum())
    p_value = min(1.0, 2 * min(at_most_zero, at_least_zero) / (len(difference) + 1))
    return float(difference.mean()), low, high, p_value


def seeds_and_resamples_interval(
    values: np.ndarray, level: float = 0.95, *, seed: int = 0
) -> tuple[float, float]:
    """Interval of the mean over seeds that counts both the support-set draw and the test sample.

    values (S, B): the metric of seed s's probe on test resample b, every seed scored on the
    same B resamples. A two-level bootstrap: resample b also draws S seeds with replacement
    (seeded by `seed`), and the interval is the percentile interval of the B means
    mean_j values[s_j, b]. In words: "95 % interval over support sets and test images: the
    2.5th to 97.5th percentile, over B bootstrap resamples of the test images (whole patients
    where the dataset has them), of the mean score over a resample of the seeds." With one seed
    it is the test-set interval of that seed."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values has shape {values.shape}; expected (n_seeds, n_resamples)")
    n_seeds, n_resamples = values.shape
    drawn = np.random.default_rng(seed).integers(0, n_seeds, size=(n_resamples, n_seeds))
    means = mean_of_finite(values[drawn, np.arange(n_resamples)[:, None]], axis=1)
    return percentile_interval(means, level)


def add_auroc(
    sums: WeightedSums, images: np.ndarray, positive: np.ndarray, score: np.ndarray
) -> Reader:
    """Reserve the sums for one AUROC; returns the function that reads it, (B,), from a table.

    Weighted Mann-Whitney: U = sum over positive i, negative j of w_i w_j ([s_j < s_i] +
    [s_j = s_i]/2), AUROC = U / (W_pos W_neg). One class is the anchor (the one with fewer
    distinct scores v_0 < ... < v_(m-1)); slots hold, per resample, the anchor weight at each v_k,
    the other class's weight tied with v_k, and its weight in [v_(k-1), v_k); a cumulative sum
    over the last gives the other class's weight strictly below each v_k. With integer weights
    every term is a multiple of 1/2, so U is exact and equals `auroc_columns`' bit for bit."""
    if positive.all() or not positive.any():
        return lambda table: np.full(table.shape[1], np.nan)
    anchor_is_positive = len(np.unique(score[positive])) <= len(np.unique(score[~positive]))
    anchor = positive if anchor_is_positive else ~positive
    values = np.unique(score[anchor])
    n_values = len(values)
    anchor_start = sums.add(images[anchor], 1.0, np.searchsorted(values, score[anchor]), n_values)
    other_score = score[~anchor]
    # slot j: values[j - 1] <= s < values[j], so slots 0..k hold everything strictly below v_k
    other_start = sums.add(
        images[~anchor], 1.0, np.searchsorted(values, other_score, side="right"), n_values + 1
    )
    at = np.searchsorted(values, other_score)
    tied = (at < n_values) & (values[np.minimum(at, n_values - 1)] == other_score)
    tied_start = sums.add(images[~anchor][tied], 1.0, at[tied], n_values)

    def read(table: np.ndarray) -> np.ndarray:
        # (m, B) blocks; the cumulative sum runs along contiguous memory, so `others` is (B, m)
        anchors = table[anchor_start : anchor_start + n_values]
        others = np.ascontiguousarray(table[other_start : other_start + n_values].T)
        below = np.cumsum(others, axis=1)
        ties = table[tied_start : tied_start + n_values]
        wins = (anchors.T * below).sum(1) + 0.5 * (anchors * ties).sum(0)
        pairs = anchors.sum(0) * table[other_start : other_start + n_values + 1].sum(0)
        numerator = wins if anchor_is_positive else pairs - wins
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(pairs > 0, numerator / pairs, np.nan)

    return read


def confusion_metrics(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy and macro-F1 (each (B,)) of confusion matrices (B, K, K) (rows
    true, columns predicted), by `probe.stats.metrics`' definitions."""
    true_per_class = matrices.sum(2)
    hits = np.diagonal(matrices, axis1=1, axis2=2)
    f1_denominator = true_per_class + matrices.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(true_per_class > 0, hits / true_per_class, np.nan)
        f1 = np.where(f1_denominator > 0, 2 * hits / f1_denominator, 0.0)
        return {
            "accuracy": hits.sum(1) / true_per_class.sum(1),
            "balanced_accuracy": mean_of_finite(recall, axis=1),
            "macro_f1": f1.mean(1),
        }


def confusion_kappa(matrices: np.ndarray) -> np.ndarray:
    """(B,) quadratic kappa of confusion matrices (B, K, K), by `probe.stats.metrics`'
    definition; apart from `confusion_metrics`, as its expected matrices are most of the work
    and only ordinal tasks report it."""
    n_classes = matrices.shape[1]
    true_per_class, predicted_per_class = matrices.sum(2), matrices.sum(1)
    weights = (np.arange(n_classes)[:, None] - np.arange(n_classes)[None, :]) ** 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = (
            true_per_class[:, :, None]
            * predicted_per_class[:, None, :]
            / true_per_class.sum(1)[:, None, None]
        )
        # flattened per resample, so the sums run in the same order as `quadratic_kappa`'s
        disagreement = (weights * matrices).reshape(len(matrices), -1).sum(1)
        chance = (weights * expected).reshape(len(matrices), -1).sum(1)
        return np.where(chance != 0, 1 - disagreement / chance, np.nan)


Key = TypeVar("Key", bound=Hashable)


def in_chunks(
    sums: WeightedSums, counts: np.ndarray, finish: Callable[[np.ndarray], dict[Key, np.ndarray]]
) -> dict[Key, np.ndarray]:
    """Compute the sums for a chunk of resamples at a time (bounded memory) and concatenate what
    `finish` reads from each (n_slots, chunk) table."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != sums.n_images:
        raise ValueError(f"counts has shape {counts.shape}; expected (B, {sums.n_images})")
    per_chunk = max(1, CHUNK_ELEMENTS // max(sums.n_slots, sums.n_images))
    parts = [
        finish(sums.compute(counts[start : start + per_chunk]))
        for start in range(0, len(counts), per_chunk)
    ]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _metrics(calibration: bool) -> tuple[str, ...]:
    return CALIBRATION_METRICS if calibration else ()


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ToolkitError(
            f"level={level}: a confidence level is a fraction between 0 and 1, e.g. 0.95",
            argument="level",
        )
