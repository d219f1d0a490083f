"""The protocol every backend follows, so their numbers agree.

Logistic regression on a support set S (rows of the train split):
- every class in S has >= 2 images: C from `C_GRID` by the mean held-out log-loss of a
  stratified k-fold split of S (k = min(5, smallest class count), folds shuffled with the seed);
- a full budget with a val split: C by log-loss on val (a full budget without one: as above);
- otherwise `DEFAULT_C`. Test rows never enter S or the choice of C.
A multi-label store is one binary problem per label, each fitted on the rows where its label is
known, with its own C. In a few-shot support set the labels share one k-fold split, stratified on
every label at once (`multilabel_cv_folds`), and the features are standardised on a fold's (or
the support's) rows whatever their labels, as one scaler fitted on the support's features would
be: every label of a fold is then a head on the same rows, and a budget is (seeds x folds) row
sets instead of (seeds x folds x labels), which on CheXpert's 14 labels is most of its cost. A
label with fewer than 2 known images of either value keeps `DEFAULT_C`. A full budget standardises
each label on its own known train rows (`probe.fit.full_logistic`); at full data the two differ by
the unknown rows' share of the moments.

Why log-loss and not accuracy: a few-shot fold holds 2-50 images, so accuracy ties across most of
the grid (every C scores 1.0 on an easy task) and a tie rule, not the data, picks C; and at small
C the logits of all classes are nearly equal, so which C wins a tie flips with float rounding.
Log-loss is a proper score that is never flat across the grid, and it is what the fit minimises.
Exact ties (within `C_TIE`) go to the smaller C (stronger regularisation).
"""

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sklearn.model_selection import StratifiedKFold

from medprobe.probe.fit.logistic import C_GRID, CV_FOLDS, DEFAULT_C

logger = logging.getLogger(__name__)

# The held-out loss that chooses C floors probabilities here before the log (scikit-learn's clip
# before 1.5); the fits are float64, so it acts only on a probability below 1e-15.
P_FLOOR = 1e-15
C_TIE = 1e-6  # held-out losses closer than this are a tie


class TokenSource(Protocol):
    """Where images' tokens come from, for the attentive probe: `read(split, rows)` ->
    (len(rows), T, D) float32 in the order of `rows` (indices into the split, as in
    `ProbeInputs`); `shape` is (T, D)."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def read(self, split: str, rows: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ProbeInputs:
    """One (store, pooling, budget) step: the pool of train rows and the support sets per seed.

    train (N, D) float32; train_labels (N,) int64 class indices, or (N, L) int8 for a
    multi-label store (one binary label per column, -1 where unknown: every probe then gives
    (M, L) positive-class scores); supports: one array of train-row indices per seed; test
    (M, D); val (V, D) and val_labels (shaped like train_labels), or None; seeds: the seed of
    each support; tokens: the same splits' token grids (the attentive probe's input), or None.
    """

    train: np.ndarray
    train_labels: np.ndarray
    supports: list[np.ndarray]
    seeds: list[int]
    test: np.ndarray
    n_classes: int
    val: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    use_val: bool = False
    tokens: TokenSource | None = None

    @property
    def multilabel(self) -> bool:
        return self.train_labels.ndim == 2


@dataclass(frozen=True)
class FitReport:
    """How the final logistic-regression fit of one (seed, label) ended.

    label: the column of a multi-label store's labels as passed in, None for single-label;
    max_gradient: the largest entry of the objective's gradient at the end (NaN where the
    backend does not say); stop: one of `lbfgs.STOP_REASONS` ('max_iter': not converged);
    selection_unconverged: how many fits made to choose C used up max_iter.
    """

    seed: int
    label: int | None
    c: float
    iterations: int
    max_gradient: float
    stop: str
    selection_unconverged: int = 0

    @property
    def converged(self) -> bool:
        return self.stop != "max_iter"


def cv_folds(labels: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Stratified folds over a support set's labels, or None if a class has < 2 images."""
    counts = np.bincount(labels)
    smallest = counts[counts > 0].min()
    if smallest < 2:
        return None
    splitter = StratifiedKFold(
        n_splits=min(CV_FOLDS, int(smallest)), shuffle=True, random_state=seed
    )
    return list(splitter.split(np.zeros(len(labels)), labels))


def multilabel_cv_folds(
    labels: np.ndarray, seed: int
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """One k-fold split of a multi-label support set, stratified on every label at once.

    labels (n, L) int8, 1/0 known, -1 unknown. The strata are (label, value) pairs of the labels
    with >= 2 known images of each value; k = min(5, the smallest such count); None when no
    label has them. Iterative stratification (Sechidis, Tsoumakas & Vlahavas 2011): the stratum
    with the fewest unplaced rows goes next, each of its rows (in a seeded order) to the fold
    that still wants most of that stratum (ties: most rows wanted overall, then the seeded
    draw). Rows in no stratum fill the folds that want most rows. Returns (fit rows, held-out
    rows) per fold, as indices into the support.
    """
    labels = np.asarray(labels)
    strata = np.concatenate([labels == 1, labels == 0], axis=1)  # (n, 2L), unknown in neither
    counts = strata.sum(0)
    n_labels = labels.shape[1]
    usable = np.minimum(counts[:n_labels], counts[n_labels:]) >= 2
    if not usable.any():
        return None
    strata = strata[:, np.concatenate([usable, usable])]
    counts = strata.sum(0)
    n_folds = int(min(CV_FOLDS, counts.min()))
    rng = np.random.default_rng(seed)
    wanted = np.tile(counts / n_folds, (n_folds, 1))  # (folds, strata) still wanted
    wanted_rows = np.full(n_folds, len(labels) / n_folds)
    fold_of = np.full(len(labels), -1)

    def place(row: int, scores: np.ndarray) -> None:
        best = np.flatnonzero(scores == scores.max())
        best = best[wanted_rows[best] == wanted_rows[best].max()]
        fold = best[rng.integers(len(best))] if len(best) > 1 else best[0]
        fold_of[row] = fold
        wanted[fold] -= strata[row]
        wanted_rows[fold] -= 1

    while True:
        unplaced = (strata & (fold_of < 0)[:, None]).sum(0)
        if not unplaced.any():
            break
        stratum = int(np.flatnonzero(unplaced == unplaced[unplaced > 0].min())[0])
        for row in rng.permutation(np.flatnonzero(strata[:, stratum] & (fold_of < 0))):
            place(int(row), wanted[:, stratum])
    for row in rng.permutation(np.flatnonzero(fold_of < 0)):
        place(int(row), wanted_rows)
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(n_folds)]


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class; probabilities (N, K), labels (N,) int."""
    picked = probabilities[np.arange(len(labels)), labels].astype(np.float64)
    return float(-np.log(np.maximum(picked, P_FLOOR)).mean())


def best_c(losses: "list[float] | np.ndarray") -> float:
    """The C of `C_GRID` with the lowest held-out loss; near-ties go to the smaller C. A grid
    with no held-out rows at all (every loss NaN) falls back to `DEFAULT_C`."""
    losses = np.nan_to_num(np.asarray(losses, dtype=float), nan=np.inf)
    if not np.isfinite(losses).any():
        return DEFAULT_C
    return C_GRID[int(np.flatnonzero(losses <= losses.min() + C_TIE)[0])]


def warn_if_no_val(inputs: ProbeInputs) -> None:
    if inputs.use_val and inputs.val is None:
        logger.warning(
            "full budget but the store has no val split: C is chosen by cross-validation on "
            "the train split instead"
        )


def support_heads(inputs: ProbeInputs, support: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, labels) per head of one support set: the support and its classes; for a
    multi-label store, the support and each label's 0/1 values, -1 where unknown (every label
    on the same rows, its unknown rows out of its loss)."""
    labels = inputs.train_labels[support]
    if not inputs.multilabel:
        return [(support, labels)]
    return [(support, labels[:, h].astype(np.int64)) for h in range(labels.shape[1])]


def cv_splits(
    inputs: ProbeInputs, support: np.ndarray, seed: int
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(fit positions, held-out positions, head) of every cross-validation fit of one support
    set, positions into `support`: a single-label support's stratified folds (head 0); a
    multi-label support's shared folds, for each label with >= 2 known images of each value
    whose fold leaves both values to fit and a known image to score (the rest keep
    `DEFAULT_C`)."""
    labels = inputs.train_labels[support]
    if not inputs.multilabel:
        return [(fit, held, 0) for fit, held in cv_folds(labels, seed) or []]
    usable = np.flatnonzero(np.minimum((labels == 1).sum(0), (labels == 0).sum(0)) >= 2)
    splits = []
    for fit, held in multilabel_cv_folds(labels, seed) or []:
        for h in usable:
            fitted = labels[fit, h]
            if (labels[held, h] >= 0).any() and (fitted == 1).any() and (fitted == 0).any():
                splits.append((fit, held, int(h)))
    return splits


def binary_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, L) int8 with -1 unknown -> 0/1 targets (N, L) int64 and the known mask (or None)."""
    known = labels >= 0
    return np.clip(labels, 0, 1).astype(np.int64), None if known.all() else known


def label_inputs(inputs: ProbeInputs, column: int) -> ProbeInputs:
    """One label of a multi-label step as a binary single-label step on the rows (support and
    val) where that label is known: what a one-probe-per-label loop fits."""
    labels = inputs.train_labels[:, column]
    val_known = None if inputs.val is None else inputs.val_labels[:, column] >= 0
    return ProbeInputs(
        train=inputs.train,
        train_labels=np.clip(labels, 0, 1).astype(np.int64),
        supports=[support[labels[support] >= 0] for support in inputs.supports],
        seeds=inputs.seeds,
        test=inputs.test,
        n_classes=2,
        val=None if inputs.val is None else inputs.val[val_known],
        val_labels=None
        if inputs.val is None
        else inputs.val_labels[val_known, column].astype(np.int64),
        use_val=inputs.use_val,
    )
