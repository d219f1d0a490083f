"""Scores of one probe on one test split.

The definitions are scikit-learn's, and tests check equality with `accuracy_score`,
`balanced_accuracy_score`, `f1_score(average='macro', labels=range(K))`,
`cohen_kappa_score(weights='quadratic', labels=range(K))` and `roc_auc_score`. Macro F1 and kappa
count every class of the task, K of them, not only those present in a test split: a class absent
from both truth and predictions scores F1 = 0 (scikit-learn's `f1_score` without `labels` would
drop it and score higher), so a split missing a class cannot flatter a probe; `absent_classes`
names them. Macro AUROC averages over the classes present in the test labels (a class with no
positive has no AUROC; scikit-learn refuses): `auroc_left_out` names the ones left out.

They are computed here from one confusion matrix and one rank pass, because
scikit-learn's per-call validation cost ~60 ms per probe on a 5,000-image test set (AUROC alone
40 ms), which made metrics, not fitting, the bulk of a few-shot sweep.
"""

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def confusion(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts, rows true class, columns predicted class."""
    return np.bincount(labels * n_classes + predicted, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )


def auroc_columns(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each column of `scores` (N, C) for the boolean targets `positive` (N, C), by the
    Mann-Whitney statistic with tied scores given their average rank (as roc_auc_score).
    NaN for a column without both outcomes."""
    ranks = rankdata(scores, axis=0)
    n_pos = positive.sum(0)
    n_neg = len(positive) - n_pos
    rank_sum = (ranks * positive).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def macro_ovr_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean one-vs-rest AUROC over the classes present in `labels` (with both outcomes); for two
    classes, the AUROC of class 1. NaN when no class qualifies."""
    if scores.shape[1] == 2:
        return float(auroc_columns((labels == 1)[:, None], scores[:, 1:2])[0])
    one_hot = labels[:, None] == np.arange(scores.shape[1])[None, :]
    per_class = auroc_columns(one_hot, scores)
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


def absent_classes(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> list[int]:
    """Classes of the task in neither the test labels nor the predictions (N,): each counts
    F1 = 0 in macro F1 (see the module docstring)."""
    seen = np.zeros(n_classes, bool)
    seen[np.asarray(labels)] = True
    seen[np.asarray(predicted)] = True
    return np.flatnonzero(~seen).tolist()


def auroc_left_out(labels: np.ndarray, n_classes: int) -> list[int]:
    """Classes the macro one-vs-rest AUROC leaves out: those without both outcomes among the
    test labels (N,). For two classes the AUROC is class 1's, defined only with both present."""
    counts = np.bincount(np.asarray(labels), minlength=n_classes)
    left_out = np.flatnonzero((counts == 0) | (counts == len(labels))).tolist()
    if n_classes == 2:
        return [0, 1] if left_out else []
    return left_out


def quadratic_kappa(matrix: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights from a confusion matrix."""
    n_classes = len(matrix)
    weights = (np.arange(n_classes)[:, None] - np.arange(n_classes)[None, :]) ** 2
    expected = np.outer(matrix.sum(1), matrix.sum(0)) / matrix.sum()
    denominator = (weights * expected).sum()
    return float(1 - (weights * matrix).sum() / denominator) if denominator else float("nan")


def single_label_metrics(
    labels: np.ndarray, scores: np.ndarray, kind: str, *, headline: str = "accuracy"
) -> dict[str, float]:
    """labels (N,) int64; scores (N, K) class probabilities. Adds quadratic kappa for ordinal
    tasks and `roc_auc` (the positive class's AUROC) for binary ones, and either of them
    whenever it is the `headline` metric (`roc_auc` of more than two classes is the macro
    one-vs-rest AUROC)."""
    n_classes = scores.shape[1]
    matrix = confusion(labels, scores.argmax(1), n_classes)
    true_per_class, predicted_per_class = matrix.sum(1), matrix.sum(0)
    hits = np.diag(matrix)
    present = true_per_class > 0
    f1_denominator = true_per_class + predicted_per_class
    f1 = np.divide(2 * hits, f1_denominator, out=np.zeros(n_classes), where=f1_denominator > 0)
    results = {
        "accuracy": float(hits.sum() / len(labels)),
        "balanced_accuracy": float((hits[present] / true_per_class[present]).mean()),
        "macro_f1": float(f1.mean()),
        "macro_auroc": macro_ovr_auroc(labels, scores),
    }
    if kind == "ordinal" or headline == "quadratic_kappa":
        results["quadratic_kappa"] = quadratic_kappa(matrix)
    if kind == "binary" or n_classes == 2 or headline == "roc_auc":
        results["roc_auc"] = results["macro_auroc"]
    return results


def multilabel_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    label_names: Sequence[str],
    competition_labels: Sequence[str] = (),
) -> dict[str, float]:
    """labels (N, L) int8 with -1 unknown; scores (N, L) positive-class probabilities.

    mean_auroc averages the per-label AUROC over labels with both outcomes among known rows
    (labels whose scores are NaN, i.e. that no probe could be trained for, are left out);
    mean_auroc_competition does the same over `competition_labels` (CheXpert's five).
    """
    per_label = {}
    for column in range(labels.shape[1]):
        known = labels[:, column] >= 0
        if np.isnan(scores[:, column]).any():
            continue
        value = auroc_columns(
            (labels[known, column] == 1)[:, None], scores[known, column][:, None]
        )[0]
        if np.isfinite(value):
            name = label_names[column] if column < len(label_names) else str(column)
            per_label[name] = float(value)
    results = {
        "mean_auroc": float(np.mean(list(per_label.values()))) if per_label else float("nan")
    }
    competition = [per_label[n] for n in competition_labels if n in per_label]
    if competition:
        results["mean_auroc_competition"] = float(np.mean(competition))
    results.update({f"auroc[{name}]": value for name, value in per_label.items()})
    return results
