"""Our metric arithmetic equals scikit-learn's definitions exactly."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)

from medprobe.probe.stats.metrics import (
    absent_classes,
    auroc_left_out,
    multilabel_metrics,
    single_label_metrics,
)


@pytest.mark.parametrize("n_classes", [2, 5])
def test_single_label_metrics_equal_sklearn(n_classes):
    rng = np.random.default_rng(n_classes)
    labels = rng.integers(0, n_classes, 400)
    scores = rng.random((400, n_classes)).round(1)  # rounding makes ties, which AUROC must handle
    scores[np.arange(400), labels] += 0.3
    scores /= scores.sum(1, keepdims=True)
    predicted = scores.argmax(1)
    ours = single_label_metrics(labels, scores, "ordinal")
    assert ours["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert ours["macro_f1"] == pytest.approx(
        f1_score(labels, predicted, labels=range(n_classes), average="macro", zero_division=0)
    )
    assert ours["quadratic_kappa"] == pytest.approx(
        cohen_kappa_score(labels, predicted, weights="quadratic")
    )
    expected_auc = (
        roc_auc_score(labels, scores[:, 1])
        if n_classes == 2
        else roc_auc_score(labels, scores, multi_class="ovr")
    )
    assert ours["macro_auroc"] == pytest.approx(expected_auc)


def test_class_missing_from_test_is_left_out_of_macro_auroc():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]])
    assert single_label_metrics(labels, scores, "multiclass")["macro_auroc"] == 1.0


def test_multilabel_mean_auroc_skips_unknown_labels_and_untrained_columns():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (200, 3)).astype(np.int8)
    labels[:20, 0] = -1
    scores = np.clip(labels + rng.normal(0, 0.8, labels.shape), -3, 3).astype(float)
    scores[:, 2] = np.nan  # no probe could be trained for this label
    result = multilabel_metrics(labels, scores, ["a", "b", "c"], competition_labels=["a"])
    known = labels[:, 0] >= 0
    auc_a = roc_auc_score(labels[known, 0], scores[known, 0])
    auc_b = roc_auc_score(labels[:, 1], scores[:, 1])
    assert result["mean_auroc"] == pytest.approx((auc_a + auc_b) / 2)
    assert result["mean_auroc_competition"] == pytest.approx(auc_a)
    assert "auroc[c]" not in result


@pytest.mark.parametrize("seed", range(5))
def test_every_class_of_the_task_counts_and_the_absent_ones_are_named(seed):
    """Macro F1 and kappa are scikit-learn's with labels=range(K); a class in neither truth nor
    predictions scores F1 = 0 (a perfect probe on 3 of 5 classes: 0.6) and is named."""
    rng = np.random.default_rng(seed)
    labels = rng.choice([0, 2, 3], 12)
    scores = rng.dirichlet(np.ones(5), 12)
    scores[:, 1] = 0  # class 1: never true, never predicted; class 4 may be predicted
    scores /= scores.sum(1, keepdims=True)
    predicted = scores.argmax(1)
    ours = single_label_metrics(labels, scores, "ordinal")
    every = list(range(5))
    assert ours["macro_f1"] == pytest.approx(
        f1_score(labels, predicted, average="macro", labels=every, zero_division=0)
    )
    assert ours["quadratic_kappa"] == pytest.approx(
        cohen_kappa_score(labels, predicted, weights="quadratic", labels=every)
    )
    assert absent_classes(labels, predicted, 5) == sorted(set(every) - set(labels) - set(predicted))
    perfect = np.eye(5)[labels]
    assert single_label_metrics(labels, perfect, "multiclass")["macro_f1"] == pytest.approx(0.6)
    assert absent_classes(labels, labels, 5) == [1, 4]
    assert auroc_left_out(labels, 5) == [1, 4]
    present = [0, 2, 3]
    expected = np.mean([roc_auc_score(labels == k, scores[:, k]) for k in present])
    assert ours["macro_auroc"] == pytest.approx(expected)
    assert auroc_left_out(np.zeros(4, int), 2) == [0, 1] and auroc_left_out(np.r_[0, 1], 2) == []
