"""Budgets parse strictly; support sets are seeded, shared by id, and drawn from train only."""

import re

import numpy as np
import pytest

from medprobe.cache import ToolkitError
from medprobe.probe.budgets import Budget, draw_support, make_budgets, support_images

NAMES = ["benign", "malignant", "normal"]


def train_table(n_per_class=(10, 7, 12)):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    ids = np.array([f"img{i:03d}" for i in range(len(labels))])
    return ids, labels


@pytest.mark.parametrize(
    ("shots", "fractions", "message", "argument"),
    [
        ([0], None, "shots=[0]: shots must be whole numbers of at least 1", "shots"),
        ([2.5], None, "got 2.5", "shots"),
        ([True], None, "got True", "shots"),
        (None, [1.5], "fractions=[1.5]: 1.5 is not in (0, 1]", "fractions"),
        (None, [0.0], "0.0 is not in (0, 1]", "fractions"),
        (None, None, "no label budget", None),
    ],
)
def test_bad_budgets_are_refused_naming_the_argument(shots, fractions, message, argument):
    with pytest.raises(ToolkitError, match=re.escape(message)) as raised:
        make_budgets(shots, fractions, False)
    assert raised.value.argument == argument


def test_budgets_are_sorted_and_deduplicated():
    budgets = make_budgets([10, 1, 5, 1], [0.1], True)
    assert [b.label for b in budgets] == ["1-shot", "5-shot", "10-shot", "0.1 of train", "full"]


def test_support_is_deterministic_per_seed_and_stratified():
    ids, labels = train_table()
    draw = [
        draw_support(ids, labels, Budget("shots", 5), dataset="d", seed=s, label_names=NAMES)
        for s in (0, 0, 1)
    ]
    assert draw[0].tolist() == draw[1].tolist()
    assert draw[0].tolist() != draw[2].tolist()
    chosen_labels = labels[np.isin(ids, draw[0])]
    assert np.bincount(chosen_labels).tolist() == [5, 5, 5]


def test_support_depends_on_ids_not_row_order():
    ids, labels = train_table()
    order = np.random.default_rng(3).permutation(len(ids))
    budget = Budget("shots", 3)
    a = draw_support(ids, labels, budget, dataset="d", seed=4, label_names=NAMES)
    b = draw_support(ids[order], labels[order], budget, dataset="d", seed=4, label_names=NAMES)
    assert a.tolist() == b.tolist()


def test_too_few_images_names_the_class_count_and_fix():
    ids, labels = train_table()
    with pytest.raises(
        ToolkitError,
        match=r"8 training images of class 'malignant'.*has 7.*allow_fewer=True",
    ):
        draw_support(ids, labels, Budget("shots", 8), dataset="d", seed=0, label_names=NAMES)
    taken = draw_support(
        ids, labels, Budget("shots", 8), dataset="d", seed=0, label_names=NAMES, allow_fewer=True
    )
    assert np.bincount(labels[np.isin(ids, taken)]).tolist() == [8, 7, 8]


def test_fraction_and_full_budgets():
    ids, labels = train_table()
    half = draw_support(
        ids, labels, Budget("fraction", 0.5), dataset="d", seed=0, label_names=NAMES
    )
    assert np.bincount(labels[np.isin(ids, half)]).tolist() == [5, 4, 6]
    everything = draw_support(ids, labels, Budget("full"), dataset="d", seed=0, label_names=NAMES)
    assert sorted(everything.tolist()) == sorted(ids.tolist())


def test_multilabel_shots_are_positives_and_negatives_per_label():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (60, 2)).astype(np.int8)
    labels[:5, 1] = -1
    ids = np.array([f"x{i}" for i in range(60)])
    support = draw_support(
        ids, labels, Budget("shots", 2), dataset="d", seed=0, label_names=["a", "b"]
    )
    chosen = labels[np.isin(ids, support)]
    for column in range(2):
        assert (chosen[:, column] == 1).sum() >= 2 and (chosen[:, column] == 0).sum() >= 2


@pytest.mark.parametrize(
    ("budget", "n_train", "n_strata", "expected"),
    [
        (Budget("shots", 5), 210, 3, 15),
        (Budget("shots", 100), 210, 3, 210),  # never more than the train split
        (Budget("fraction", 0.1), 210, 3, 21),
        (Budget("fraction", 0.0001), 210, 3, 3),  # one per class at least, as draw_support
        (Budget("full"), 210, 3, 210),
    ],
)
def test_support_images_is_what_draw_support_takes(budget, n_train, n_strata, expected):
    assert support_images(budget, n_train, n_strata) == expected
    labels = np.arange(n_train) % n_strata
    ids = [f"img{i:04d}" for i in range(n_train)]
    names = [f"c{c}" for c in range(n_strata)]
    drawn = draw_support(
        ids, labels, budget, dataset="d", seed=0, label_names=names, allow_fewer=True
    )
    assert len(drawn) == expected
