"""Subgroup specs, binning, Youden's threshold, gaps and study pooling against plain references."""

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from medprobe.cache import ToolkitError
from medprobe.probe.stats.subgroups import (
    SubgroupSpec,
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
