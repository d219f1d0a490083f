"""Label budgets and the support sets drawn for them: once per (dataset, budget, seed), by image
id, so every model of a dataset is probed on exactly the same labelled images (paired)."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medprobe.cache.errors import ToolkitError

# Budgets sort by kind (shots, fractions, full), then by size.
KIND_ORDER = {"shots": 0, "fraction": 1, "full": 2}


@dataclass(frozen=True)
class Budget:
    """`shots` labelled images per class, a `fraction` of the train split, or all of it."""

    kind: str  # "shots" | "fraction" | "full"
    value: float = 0.0

    @property
    def label(self) -> str:
        if self.kind == "shots":
            return f"{int(self.value)}-shot"
        if self.kind == "fraction":
            return f"{self.value:g} of train"
        return "full"

    @property
    def random(self) -> bool:
        """A full budget draws nothing, so one seed says all there is to say."""
        return self.kind != "full"


def make_budgets(
    shots: Sequence[int] | None = None,
    fractions: Sequence[float] | None = None,
    full: bool = False,
) -> list[Budget]:
    """Budgets from numbers, sorted and deduplicated; every value is checked before anything
    runs, and errors name the library argument."""
    budgets: list[Budget] = []
    for value in shots or ():
        if isinstance(value, bool) or not float(value).is_integer() or value < 1:
            raise ToolkitError(
                f"shots={list(shots or ())}: shots must be whole numbers of at least 1, got "
                f"{value!r}",
                argument="shots",
            )
        budgets.append(Budget("shots", int(value)))
    for value in fractions or ():
        if not 0 < value <= 1:
            raise ToolkitError(
                f"fractions={list(fractions or ())}: {value} is not in (0, 1]",
                argument="fractions",
            )
        budgets.append(Budget("fraction", float(value)))
    if full:
        budgets.append(Budget("full"))
    if not budgets:
        raise ToolkitError("no label budget: pass shots=[1, 5, 10], fractions=[0.1] or full=True")
    return sorted(set(budgets), key=lambda b: (KIND_ORDER[b.kind], b.value))


def support_images(budget: Budget, n_train: int, n_strata: int) -> int:
    """About how many images a support set of `budget` holds, for a train split of `n_train`
    images in `n_strata` classes (or label outcomes): what `draw_support` takes, before the
    union of a multi-label draw removes repeats."""
    if budget.kind == "shots":
        wanted = int(budget.value) * n_strata
    elif budget.kind == "fraction":
        wanted = max(n_strata, round(budget.value * n_train))
    else:
        wanted = n_train
    return min(wanted, n_train)


def budget_seed(dataset: str, budget: Budget, seed: int) -> int:
    """A stable seed per (dataset, budget, seed), independent of Python's hash randomisation."""
    digest = hashlib.sha256(f"{dataset}|{budget.kind}|{budget.value}|{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def draw_support(
    train_ids: Sequence[str],
    train_labels: np.ndarray,
    budget: Budget,
    *,
    dataset: str,
    seed: int,
    label_names: Sequence[str],
    allow_fewer: bool = False,
) -> np.ndarray:
    """The support set: a sorted array of image ids from the train split.

    train_labels: (N,) class indices, or (N, L) int8 multi-label targets with -1 where unknown;
    for multi-label, k shots means k known positives and k known negatives per label (their
    union is the support). Rows are taken in id order before sampling, so two stores of the
    same dataset agree whatever their row order.
    """
    order = np.argsort(np.asarray(train_ids, dtype=object).astype(str), kind="stable")
    ids = np.asarray(train_ids, dtype=object)[order]
    labels = np.asarray(train_labels)[order]
    if not budget.random:
        return np.sort(ids.astype(str))
    rng = np.random.default_rng(budget_seed(dataset, budget, seed))
    strata = _strata(labels, label_names)
    chosen: list[np.ndarray] = []
    for name, members in strata:
        wanted = (
            int(budget.value)
            if budget.kind == "shots"
            else max(1, round(budget.value * len(members)))
        )
        if wanted > len(members):
            if not allow_fewer:
                argument = "shots" if budget.kind == "shots" else "fractions"
                raise ToolkitError(
                    f"{budget.label} needs {wanted} training images of {name} in {dataset}, "
                    f"which has {len(members)}; lower {argument} or pass allow_fewer=True"
                )
            wanted = len(members)
        chosen.append(rng.choice(members, size=wanted, replace=False))
    return np.sort(np.unique(ids[np.concatenate(chosen)].astype(str)))


def _strata(labels: np.ndarray, label_names: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(description, row indices) per class, or per (label, positive/negative) for multi-label."""
    if labels.ndim == 1:
        return [
            (
                f"class {label_names[c] if c < len(label_names) else c!r}",
                np.flatnonzero(labels == c),
            )
            for c in np.unique(labels)
        ]
    strata = []
    for column in range(labels.shape[1]):
        name = label_names[column] if column < len(label_names) else str(column)
        for value, word in ((1, "positive"), (0, "negative")):
            members = np.flatnonzero(labels[:, column] == value)
            if len(members):
                strata.append((f"{word} {name!r}", members))
    return strata
