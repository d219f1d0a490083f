"""The protocol every backend follows, so their numbers agree.

Logistic regression on a support set S (rows of the train split):
- every class in S has >= 2 images: C from `C_GRID` by the mean held-out log-loss of a
  stratified k-fold split of S (k = min(5, smallest class count), folds shuffled with the seed);
- a full budget with a val split: C by log-loss on val (a full budget without one: as above);
- otherwise `DEFAULT_C`. Test rows never enter S or the choice of C.
A multi-label store is one binary problem per label, each on the rows where its label is known,
with its own C.

Why log-loss and not accuracy: a few-shot fold holds 2-50 images, so accuracy ties across most of
the grid (every C scores 1.0 on an easy task) and a tie rule, not the data, picks C; and at small
C the logits of all classes are nearly equal, so which C wins a tie flips with float rounding.
Log-loss is a proper score that is never flat across the grid, and it is what the fit minimises.
Exact ties (within `C_TIE`) go to the smaller C (stronger regularisation).
"""

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold

from medprobe.probe.logistic import C_GRID, CV_FOLDS, DEFAULT_C

logger = logging.getLogger(__name__)

P_FLOOR = 1e-15  # probabilities are clipped here before the log, as sklearn's log_loss does
C_TIE = 1e-6  # held-out losses closer than this are a tie


@dataclass(frozen=True)
class ProbeInputs:
    """One (store, pooling, budget) step: the pool of train rows and the support sets per seed.

    train (N, D) float32; train_labels (N,) int64 class indices, or (N, L) int8 for a
    multi-label store (one binary label per column, -1 where unknown: every probe then gives
    (M, L) positive-class scores); supports: one array of train-row indices per seed; test
    (M, D); val (V, D) and val_labels (shaped like train_labels), or None; seeds: the seed of
    each support.
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


def label_heads(inputs: ProbeInputs, support: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, labels) per label of one support set: the rows where that label is known and its
    0/1 values for a multi-label store; the support and its classes otherwise."""
    if not inputs.multilabel:
        return [(support, inputs.train_labels[support])]
    heads = []
    for column in range(inputs.train_labels.shape[1]):
        values = inputs.train_labels[support, column]
        heads.append((support[values >= 0], values[values >= 0].astype(np.int64)))
    return heads


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
