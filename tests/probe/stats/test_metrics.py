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

from medprobe.probe.stats.metrics import multilabel_metrics, single_label_metrics


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
