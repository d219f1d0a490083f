"""The multi-label cross-validation split: shared by every label, stratified on all of them."""

import numpy as np
import pytest
from sklearn.model_selection import KFold

from medprobe.probe.fit.logistic import CV_FOLDS
from medprobe.probe.fit.protocol import multilabel_cv_folds


def random_labels(trial: int) -> np.ndarray:
    """(n, L) int8 labels of varied prevalence, a tenth unknown (-1)."""
    rng = np.random.default_rng(trial)
    n_rows, n_labels = int(rng.integers(20, 300)), int(rng.integers(2, 15))
    labels = (rng.random((n_rows, n_labels)) < rng.uniform(0.05, 0.6, n_labels)).astype(np.int8)
    labels[rng.random(labels.shape) < 0.1] = -1
    return labels


def strata_of(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, S) membership of the (label, value) strata of labels with >= 2 of each value, and
    their sizes, written plainly."""
    columns = []
    for column in labels.T:
        if min((column == 1).sum(), (column == 0).sum()) >= 2:
            columns += [column == 1, column == 0]
    strata = np.stack(columns, axis=1)
    return strata, strata.sum(0)


@pytest.mark.parametrize("trial", range(40))
def test_folds_partition_the_support_and_leave_every_label_both_values(trial):
    labels = random_labels(trial)
    folds = multilabel_cv_folds(labels, seed=trial)
    if folds is None:
        assert all(min((c == 1).sum(), (c == 0).sum()) < 2 for c in labels.T)
        return
    strata, sizes = strata_of(labels)
    assert len(folds) == min(CV_FOLDS, sizes.min())
    held = np.concatenate([h for _, h in folds])
    assert np.array_equal(np.sort(held), np.arange(len(labels)))
    for fit, held_out in folds:
        assert np.array_equal(np.sort(np.concatenate([fit, held_out])), np.arange(len(labels)))
        assert strata[fit].any(0).all()  # both values of every usable label left to fit
    # The rarest stratum is spread within one image of evenly.
    rarest = strata[:, np.argmin(sizes)]
    per_fold = np.array([rarest[h].sum() for _, h in folds])
    assert np.abs(per_fold - rarest.sum() / len(folds)).max() < 1


def test_strata_are_far_more_even_than_a_shuffled_kfold():
    ours, shuffled = [], []
    for trial in range(60):
        labels = random_labels(trial)
        folds = multilabel_cv_folds(labels, seed=trial)
        if folds is None:
            continue
        strata, sizes = strata_of(labels)
        k = len(folds)
        for split, out in (
            (folds, ours),
            (KFold(k, shuffle=True, random_state=trial).split(labels), shuffled),
        ):
            counts = np.array([strata[h].sum(0) for _, h in split])
            out.append(np.abs(counts - sizes / k).mean())
    assert np.mean(ours) < 0.6 * np.mean(shuffled)


def test_split_is_seeded_and_unusable_labels_neither_limit_nor_drive_it():
    labels = random_labels(7)
    first, again = multilabel_cv_folds(labels, 3), multilabel_cv_folds(labels, 3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    other = multilabel_cv_folds(labels, 4)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other, strict=True))
    # A label with a single positive cannot be cross-validated: it keeps the others' k.
    with_rare = np.concatenate([labels, np.zeros((len(labels), 1), np.int8)], axis=1)
    with_rare[0, -1] = 1
    assert len(multilabel_cv_folds(with_rare, 3)) == len(first)
    assert multilabel_cv_folds(np.full((10, 2), -1, np.int8), 0) is None
