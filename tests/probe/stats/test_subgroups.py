"""Subgroup specs, binning, Youden's threshold, gaps, study pooling, and each group's metrics on
each resample, against plain references."""

from itertools import pairwise

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    cohen_kappa_score,
    roc_auc_score,
    roc_curve,
)

from medprobe.cache import ToolkitError
from medprobe.probe.stats.subgroups import (
    NO_IMAGES,
    Grouping,
    SubgroupSpec,
    group_scores,
    make_grouping,
    parse_subgroups,
    spread,
    youden_threshold,
)
from medprobe.probe.stats.units import make_units, parse_aggregate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sex", (SubgroupSpec("sex"),)),
        ("sex,age:0,40,60,80", (SubgroupSpec("sex"), SubgroupSpec("age", (0, 40, 60, 80)))),
        (["age:0,50.5,90", "site"], (SubgroupSpec("age", (0, 50.5, 90)), SubgroupSpec("site"))),
    ],
)
def test_specs_read_edges_written_with_commas(text, expected):
    assert parse_subgroups(text) == expected
    assert parse_subgroups([s.text for s in expected]) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("age:40", "at least two increasing"),
        ("age:60,40", "at least two increasing"),
        ("age:x", "is not a metadata column"),
        ("sex,sex", "named twice"),
    ],
)
def test_bad_specs_name_the_argument(text, message):
    with pytest.raises(ToolkitError, match=message):
        parse_subgroups(text)


def test_binning_by_edges_and_quartiles_leaves_missing_and_outside_out():
    values = np.array(["10", "40", "59.9", "60", "80", "", "95"])
    grouping = make_grouping(SubgroupSpec("age", (0, 40, 60, 80)), values, "d")
    assert grouping.names == ("[0, 40)", "[40, 60)", "[60, 80]")
    assert grouping.codes.tolist() == [0, 1, 1, 2, 2, -1, -1]
    ages = np.arange(1, 101).astype(str)
    quartiles = make_grouping(SubgroupSpec("age"), ages, "d")
    assert np.bincount(quartiles.codes).tolist() == [25, 25, 25, 25]
    text = make_grouping(SubgroupSpec("sex"), np.array(["M", "F", "", "M"]), "d")
    assert text.names == ("F", "M") and text.codes.tolist() == [1, 0, -1, 1]
    with pytest.raises(ToolkitError, match=r"in 1 group\(s\) \['M'\]"):
        make_grouping(SubgroupSpec("sex"), np.array(["M", "", "M"]), "d")


def test_youden_threshold_is_sklearns_best_roc_point():
    rng = np.random.default_rng(0)
    positive = rng.random(300) < 0.3
    scores = np.clip(0.3 * positive + rng.normal(0.4, 0.2, 300), 0, 1)
    fpr, tpr, thresholds = roc_curve(positive, scores)
    best = thresholds[np.argmax(tpr - fpr)]
    threshold = youden_threshold(positive, scores)
    predicted = scores >= threshold
    j = predicted[positive].mean() - predicted[~positive].mean()
    assert j == pytest.approx(np.max(tpr - fpr))
    assert threshold == pytest.approx(best)
    assert youden_threshold(np.ones(4, bool), np.linspace(0, 1, 4)) == 0.5


def test_gap_and_worst_ignore_undefined_groups():
    values = np.array([[0.9, np.nan], [0.7, 0.6], [np.nan, np.nan]])
    gap, worst = spread(values)
    assert gap[0] == pytest.approx(0.2) and worst[0] == 0.7
    assert np.isnan(gap[1]) and np.isnan(worst[1])  # one defined group: no gap


def test_units_pool_probabilities_and_labels_plainly():
    ids = np.array(["a", "b", "c", "d", "e"])
    units = make_units(ids, np.array(["s1", "s1", "s2", "", "s2"]), "mean")
    assert units.ids.tolist() == ["d", "s1", "s2"]
    scores = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5], [0.2, 0.8], [0.1, 0.9]])
    pooled = units.scores(scores, "binary")
    assert pooled[:, 1].tolist() == pytest.approx([0.8, 0.4, 0.7])
    assert units.labels(np.array([0, 1, 0, 1, 0]), "binary").tolist() == [1, 1, 0]
    highest = make_units(ids, np.array(["s1", "s1", "s2", "", "s2"]), "max")
    assert highest.scores(scores, "binary")[:, 1].tolist() == pytest.approx([0.8, 0.7, 0.9])
    three = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert highest.scores(three, "multiclass").sum(1) == pytest.approx(np.ones(3))
    with pytest.raises(ToolkitError, match="holds images of different classes"):
        units.labels(np.array([0, 1, 2, 2, 2]), "multiclass")
    assert units.collapse(np.array(["F", "F", "M", "", "F"])).tolist() == ["", "F", ""]
    assert parse_aggregate("study") == "study:mean" and parse_aggregate(None) is None


def _plain_ece(positive_or_labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Top-label ECE over 15 bins (b/15, (b+1)/15]; (N,) probabilities are a binary label's."""
    if probabilities.ndim == 1:  # the two-class probabilities [1 - p, p]
        probabilities = np.stack([1 - probabilities, probabilities], axis=1)
        positive_or_labels = positive_or_labels.astype(int)
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == positive_or_labels
    edges = np.arange(16) / 15
    total = 0.0
    for low, high in pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return total / len(confidence)


def _plain_headline(headline: str, labels: np.ndarray, scores: np.ndarray) -> float:
    """The headline metric by scikit-learn on one group's drawn images (repeated as drawn)."""
    n_classes = scores.shape[1]
    if headline == "balanced_accuracy":
        return balanced_accuracy_score(labels, scores.argmax(1))
    if headline == "quadratic_kappa":
        return cohen_kappa_score(
            labels, scores.argmax(1), weights="quadratic", labels=range(n_classes)
        )
    if headline == "mean_auroc":  # labels (n, L) with -1 unknown, scores (n, L), NaN: untrained
        per_label = []
        for column in np.flatnonzero(~np.isnan(scores).any(0)):
            known = labels[:, column] >= 0
            if len(np.unique(labels[known, column])) == 2:
                per_label.append(roc_auc_score(labels[known, column], scores[known, column]))
        return np.mean(per_label) if per_label else np.nan
    # roc_auc: the positive class's for two classes, else the mean over classes with both outcomes
    classes = [1] if n_classes == 2 else range(n_classes)
    per_class = [
        roc_auc_score(labels == c, scores[:, c])
        for c in classes
        if 0 < (labels == c).sum() < len(labels)
    ]
    return np.mean(per_class) if per_class else np.nan


# a group's drawn images may hold one class: scikit-learn warns, and kappa is NaN as ours
@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@pytest.mark.parametrize(
    ("kind", "headline"),
    [
        ("multiclass", "balanced_accuracy"),
        ("ordinal", "quadratic_kappa"),
        ("multiclass", "roc_auc"),
        ("binary", "roc_auc"),
        ("multilabel", "mean_auroc"),
    ],
)
def test_group_scores_on_each_resample_equal_sklearn_on_the_groups_drawn_images(kind, headline):
    """The one pass over all groups of two attributes against each group scored alone on each
    resample."""
    rng = np.random.default_rng(7)
    n_images, n_resamples = 70, 25
    if kind == "multilabel":
        labels = rng.integers(-1, 2, (n_images, 3)).astype(np.int8)
        scores = np.clip(0.3 * (labels == 1) + rng.random((n_images, 3)) * 0.7, 0, 1)
        scores[:, 2] = np.nan  # a label no probe was trained for is left out
        task = {"kind": kind, "headline_metric": headline, "label_names": ["a", "b", "c"]}
    else:
        n_classes = 2 if kind == "binary" else 4
        labels = rng.integers(0, n_classes, n_images)
        logits = rng.normal(size=(n_images, n_classes)) + np.eye(n_classes)[labels]
        scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        task = {"kind": kind, "headline_metric": headline, "label_names": list("abcd")}
    # three groups, one of three images (some resamples draw none of it), one empty; some in none
    codes = rng.integers(0, 2, n_images)
    codes[:3], codes[3:6] = 2, -1
    # a second attribute, read from the same sums: halves of the images, crossing the first
    halves = (np.arange(n_images) >= n_images // 2).astype(np.int64)
    groupings = [
        Grouping("site", ("a", "b", "c", "d"), codes),
        Grouping("half", ("1", "2"), halves),
    ]
    counts = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=n_resamples)
    binary_like = kind in ("binary", "multilabel")
    thresholds = np.array([0.5, 0.4, 0.6]) if binary_like else None
    by_attribute = group_scores(labels, scores, task, groupings, counts, thresholds)
    assert [s.attribute for s in by_attribute] == ["site", "half"]
    got = by_attribute[0]
    assert np.isnan(got.values[headline][3]) and got.notes[3] == NO_IMAGES
    for a, g in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]:
        got = by_attribute[a]
        rows = np.flatnonzero(groupings[a].codes == g)
        for b, weights in enumerate([np.ones(n_images, int), *counts]):
            drawn = np.repeat(rows, weights[rows])
            expected_headline = expected_ece = np.nan
            if len(drawn):
                expected_headline = _plain_headline(headline, labels[drawn], scores[drawn])
                if kind == "multilabel":
                    eces = [
                        _plain_ece(labels[drawn, j][known] == 1, scores[drawn, j][known])
                        for j in range(2)
                        if (known := labels[drawn, j] >= 0).any()
                    ]
                    expected_ece = np.mean(eces) if eces else np.nan
                else:
                    expected_ece = _plain_ece(labels[drawn], scores[drawn])
            expected = {headline: expected_headline, "ece": expected_ece}
            if binary_like:  # equalized odds: TPR and FPR at the val thresholds, label by label
                expected.update(_plain_rates(labels[drawn], scores[drawn], thresholds))
            for metric, value_expected in expected.items():
                value = got.values[metric][g] if b == 0 else got.resampled[metric][g, b - 1]
                np.testing.assert_allclose(
                    value, value_expected, atol=1e-12, err_msg=f"{metric} {g} {b}"
                )


def _plain_rates(labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> dict:
    """{'tpr', 'fpr'}: the share of positives (negatives) scored at or above the threshold,
    averaged over the trained labels where defined; a binary task's positive class is column 1."""
    if labels.ndim == 1:
        labels, scores = labels[:, None], scores[:, 1:2]
    rates = {"tpr": [], "fpr": []}
    for column in range(labels.shape[1]):
        if np.isnan(scores[:, column]).any():
            continue
        predicted = scores[:, column] >= thresholds[column]
        for name, outcome in (("tpr", 1), ("fpr", 0)):
            chosen = labels[:, column] == outcome
            if chosen.any():
                rates[name].append(predicted[chosen].mean())
    return {name: np.mean(values) if values else np.nan for name, values in rates.items()}
