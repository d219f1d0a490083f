"""Test-set bootstrap benchmark: every metric on B = 1,000 resamples at once, against the naive
loop a user would write (scikit-learn's metric functions on each resampled test set in turn).

Two test sets of 20,000 images: single-label with 8 classes (ISIC-like: accuracy, balanced
accuracy, macro-F1, macro one-vs-rest AUROC, plus ECE, Brier and log loss), and multi-label with
14 labels, 8 % positives and 10 % unknown (ChestMNIST/CheXpert-like: mean AUROC over labels,
per-label AUROC, calibration). Scores are float32 probabilities of a noisy linear probe, as the
sweep hands them over: nearly every score distinct, which is AUROC's hardest case here. The naive
loop takes minutes, so it runs `--naive-resamples` of the 1,000 and its time is scaled (every
resample costs the same); the values of those resamples are compared with ours.

    python -m bench.bootstrap [--naive-resamples N] [--resamples B]
"""

import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    roc_auc_score,
)

from medprobe.probe.stats.bootstrap import (
    bootstrap_multilabel,
    bootstrap_single_label,
    resample_counts,
)

N_IMAGES = 20_000
N_CLASSES = 8
N_LABELS = 14


def single_label_scores(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N,) labels with ISIC-like imbalance and (N, 8) float32 softmax probabilities."""
    frequency = np.array([0.18, 0.51, 0.13, 0.03, 0.10, 0.01, 0.01, 0.03])
    labels = rng.choice(N_CLASSES, N_IMAGES, p=frequency)
    logits = 1.2 * np.eye(N_CLASSES)[labels] + rng.normal(0, 1, (N_IMAGES, N_CLASSES))
    logits += np.log(frequency)  # a probe's bias towards the frequent classes
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    return labels, (probabilities / probabilities.sum(1, keepdims=True)).astype(np.float32)


def multilabel_scores(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N, 14) int8 labels (-1 unknown) and (N, 14) float32 positive-class probabilities."""
    labels = (rng.random((N_IMAGES, N_LABELS)) < 0.08).astype(np.int8)
    logits = 1.5 * labels - 2.5 + rng.normal(0, 1, (N_IMAGES, N_LABELS))
    labels[rng.random((N_IMAGES, N_LABELS)) < 0.10] = -1
    return labels, (1 / (1 + np.exp(-logits))).astype(np.float32)


def naive_ece(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE as usually written: a loop over bins of the resampled test set."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    total = 0.0
    for k in range(n_bins):
        inside = (confidence > k / n_bins) & (confidence <= (k + 1) / n_bins)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


def naive_single_label(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> dict:
    """Each resample's test set materialised, every metric by scikit-learn (ECE by a loop)."""
    values: dict[str, list[float]] = {}
    # float32 probabilities sum to 1 only to float32 precision, which scikit-learn warns about
    warnings.filterwarnings("ignore", "The y_prob values do not sum to one", UserWarning)
    for resample in counts:
        rows = np.repeat(np.arange(len(labels)), resample)
        y, p = labels[rows], scores[rows].astype(np.float64)
        predicted = p.argmax(1)
        present = np.unique(y)
        row = {
            "accuracy": accuracy_score(y, predicted),
            "balanced_accuracy": balanced_accuracy_score(y, predicted),
            "macro_f1": f1_score(
                y, predicted, labels=range(N_CLASSES), average="macro", zero_division=0
            ),
            "macro_auroc": np.mean([roc_auc_score(y == c, p[:, c]) for c in present]),
            "ece": naive_ece(y, p),
            "brier": brier_score_loss(y, p, labels=range(N_CLASSES)),
            "log_loss": log_loss(y, p, labels=range(N_CLASSES)),
        }
        for name, value in row.items():
            values.setdefault(name, []).append(value)
    return {name: np.array(value) for name, value in values.items()}


def naive_multilabel(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> dict:
    """Per resample and label, scikit-learn's AUROC on the known images; their mean."""
    means = []
    for resample in counts:
        rows = np.repeat(np.arange(len(labels)), resample)
        aurocs = []
        for column in range(N_LABELS):
            known = labels[rows, column] >= 0
            aurocs.append(roc_auc_score(labels[rows, column][known], scores[rows, column][known]))
        means.append(np.mean(aurocs))
    return {"mean_auroc": np.array(means)}


def compare(task: str, ours: float, naive: float, resamples: int, naive_resamples: int) -> None:
    scaled = naive * resamples / naive_resamples
    print(
        f"{task}: vectorised {ours:6.2f} s | naive {scaled:7.1f} s "
        f"({naive:.1f} s for {naive_resamples} resamples, scaled) | {scaled / ours:5.0f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--naive-resamples", type=int, default=20)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, numpy {np.__version__}; "
        f"{N_IMAGES:,} test images, B = {args.resamples:,}"
    )
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    counts = resample_counts(N_IMAGES, args.resamples, seed=0)
    seconds = time.perf_counter() - started
    print(f"resample_counts ({args.resamples:,} x {N_IMAGES:,}): {seconds:.2f} s")
    subset = counts[: args.naive_resamples]

    labels, scores = single_label_scores(rng)
    started = time.perf_counter()
    ours = bootstrap_single_label(labels, scores, counts, "multiclass")
    vectorised = time.perf_counter() - started
    started = time.perf_counter()
    naive = naive_single_label(labels, scores, subset)
    naive_seconds = time.perf_counter() - started
    compare("8 classes, 7 metrics", vectorised, naive_seconds, args.resamples, args.naive_resamples)
    for name, values in naive.items():
        gap = np.abs(ours[name][: args.naive_resamples] - values).max()
        print(f"    {name:18s} max |ours - naive| over the compared resamples: {gap:.1e}")

    labels, scores = multilabel_scores(rng)
    started = time.perf_counter()
    ours = bootstrap_multilabel(labels, scores, counts, [str(c) for c in range(N_LABELS)])
    vectorised = time.perf_counter() - started
    started = time.perf_counter()
    naive = naive_multilabel(labels, scores, subset)
    naive_seconds = time.perf_counter() - started
    compare(
        "14 labels, AUROC + calibration (naive: AUROC only)",
        vectorised,
        naive_seconds,
        args.resamples,
        args.naive_resamples,
    )
    gap = np.abs(ours["mean_auroc"][: args.naive_resamples] - naive["mean_auroc"]).max()
    print(f"    mean_auroc         max |ours - naive| over the compared resamples: {gap:.1e}")


if __name__ == "__main__":
    main()
