"""Seeded, stratified (optionally patient-grouped) train/val/test assignment."""

from collections.abc import Sequence

import numpy as np

from medprobe.cache.errors import ToolkitError

SPLIT_NAMES = ("train", "val", "test")


def _allocate(n_items: int, fractions: Sequence[float]) -> list[int]:
    """Counts per split summing to n_items, by largest remainder (val/test first when tied)."""
    exact = np.asarray(fractions, dtype=float) * n_items
    counts = np.floor(exact).astype(int)
    # Largest remainder first; on a tie the later split (test, then val) gets the image, so a
    # small stratum still reaches val and test.
    order = np.lexsort((-np.arange(len(counts)), -(exact - counts)))
    for i in order[: n_items - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def stratified_split(
    strata: np.ndarray,
    *,
    fractions: tuple[float, float, float],
    seed: int,
    groups: Sequence[str] | None = None,
) -> np.ndarray:
    """(N,) array of 'train' | 'val' | 'test'.

    strata: (N,) label (or any stratum) per row. Within each stratum the rows are shuffled with
    `np.random.default_rng(seed)` and cut by `fractions`. With `groups`, whole groups are assigned
    (stratified by each group's most common stratum), so no patient straddles two splits.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ToolkitError(f"split fractions {fractions} must be >= 0 and sum to 1")
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    if groups is None:
        unit_ids = np.arange(len(strata))
        unit_strata = strata
    else:
        group_array = np.asarray(groups, dtype=object)
        unit_ids, inverse = np.unique(group_array, return_inverse=True)
        unit_strata = np.empty(len(unit_ids), dtype=strata.dtype)
        for unit in range(len(unit_ids)):
            values, counts = np.unique(strata[inverse == unit], return_counts=True)
            unit_strata[unit] = values[np.argmax(counts)]
    unit_split = np.empty(len(unit_ids), dtype=object)
    for stratum in np.unique(unit_strata):
        members = np.flatnonzero(unit_strata == stratum)
        members = members[rng.permutation(len(members))]
        n_train, n_val, _ = _allocate(len(members), fractions)
        unit_split[members[:n_train]] = "train"
        unit_split[members[n_train : n_train + n_val]] = "val"
        unit_split[members[n_train + n_val :]] = "test"
    if groups is None:
        return unit_split.astype(str)
    return unit_split[inverse].astype(str)


def _named(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def split_warnings(
    splits: Sequence[str], labels: np.ndarray, label_names: Sequence[str]
) -> list[str]:
    """What a probe of this split could not measure, in words naming the classes: an empty
    train or test split (every image in train, as 70/15/15 leaves classes of 2 images), and
    classes with no train image (no support set) or no test image (no recall). Multi-label rows
    ((N, L) labels) get the empty-split check only."""
    splits = np.asarray(splits, dtype=str)
    counts = {name: int((splits == name).sum()) for name in SPLIT_NAMES}
    warnings = []
    if labels.ndim == 1:
        names = list(label_names) or [str(c) for c in range(int(labels.max(initial=-1)) + 1)]
        sizes = np.bincount(labels, minlength=len(names))
        tiny = [names[c] for c in np.flatnonzero((sizes > 0) & (sizes < 3))]
        cause = (
            f"; {len(tiny)} of {len(names)} classes have fewer than 3 images, too few to reach "
            f"val and test when a split is drawn ({_named(tiny)})"
            if tiny
            else ""
        )
        for split, role in (("test", "test"), ("train", "train")):
            present = set(labels[splits == split].tolist())
            absent = [names[c] for c in np.flatnonzero(sizes) if c not in present]
            if absent and counts[split]:
                warnings.append(
                    f"{len(absent)} of {len(names)} classes have no {role} image, so a probe "
                    f"cannot {'score' if split == 'test' else 'learn'} them: {_named(absent)}"
                )
    else:
        cause = ""
    empty = [name for name in ("train", "test") if counts[name] == 0]
    if empty:  # (an empty val is common and harmless: regularisation is then chosen by CV)
        given = ", ".join(f"{counts[name]} {name}" for name in SPLIT_NAMES)
        warnings.insert(
            0,
            f"the split has no {' and no '.join(empty)} images ({given}){cause}; a probe needs "
            "train and test images: assign some to each (split folders or the split column) or "
            "give more images per class",
        )
    return warnings
