"""What the attentive probe fits and how it chooses: the candidate models of each support set
(folds x weight decays) and its final one, their targets and row weights, held-out losses and the
choice of weight decay; the constants of the protocol; and where tokens come from (`TokenSource`).
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medprobe.probe.fit.attentive.model import N_QUERIES
from medprobe.probe.fit.protocol import (
    P_FLOOR,
    ProbeInputs,
    TokenSource,
    cv_folds,
    multilabel_cv_folds,
)

if TYPE_CHECKING:
    import torch

# AdamW moves each weight by about the learning rate per step (Adam's update is near +-1) and its
# decoupled decay pulls it back by rate x decay x weight, so weights settle near |w| = 1 / decay
# once the steps can reach that far: the grid chooses how far the heads and queries may go.
WEIGHT_DECAYS: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
DEFAULT_WEIGHT_DECAY = 1.0
WEIGHT_DECAY_TIE = 1e-6  # held-out losses closer than this are a tie
# Full-batch steps on a small support: 100 cosine steps of 0.1 reach ~5, past 1 / decay for all
# but the smallest decay (nearly free). At 1e-2 they reached ~0.5 before the old grid's decays
# (1e-3..1) bound anything, so the step budget regularised, the CV chose 1 (the largest) on every
# seed, a grid up to 100 changed nothing, and bench.attentive's spread contrast lost 3.8 points to
# logistic regression on the mean token; at 0.1 with this grid it is -0.1, and the one-token
# contrast +86 instead of +60.
# Mini-batch steps take it too: on bench.attentive's quick full budget (80 steps) 1e-3 gave 65 %
# balanced accuracy, 1e-2 87.5 %, 0.1 100 %.
LEARNING_RATE = 0.1
FEW_SHOT_STEPS = 100
EPOCHS = 10
BATCH_ROWS = 256
CHUNK_ROWS = 256
STREAM_ROWS = 1024
# Floats one batched full-batch training may hold (tokens, attention, pooled vectors and their
# gradients): about 1 GB.
BATCH_FLOATS = 256_000_000


@dataclass(frozen=True)
class ArrayTokens:
    """Tokens held in memory, split -> (N, T, D) array: for tests and benchmarks."""

    splits: dict[str, np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(next(iter(self.splits.values())).shape[1:])

    def read(self, split: str, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.splits[split][rows], dtype=np.float32)


@dataclass(frozen=True)
class Group:
    """One support set's models: rows (n,) train indices; targets (n,) int64 or (n, L) float32;
    known (n, L) bool or None; fit and held (m, n) float32 row weights and decay (m,) of its m
    candidate models, among which the weight decay is chosen: (fold, weight decay) pairs of a
    few-shot support, or one model per weight decay on every row where val chooses; none where
    a support is too small for folds (`final` then fits `DEFAULT_WEIGHT_DECAY`)."""

    rows: np.ndarray
    targets: np.ndarray
    known: np.ndarray | None
    fit: np.ndarray
    held: np.ndarray
    decay: np.ndarray
    seed: int

    @property
    def cross_validated(self) -> bool:
        return bool(self.held.any())

    def final(self, weight_decay: float) -> "Group":
        """The one model fitted on every row at the chosen weight decay (trained after the choice:
        one final instead of one per weight decay, m = folds x decays + 1)."""
        every = np.ones((1, len(self.rows)), np.float32)
        decay = np.array([weight_decay], np.float32)
        return Group(self.rows, self.targets, self.known, every, 0 * every, decay, self.seed)


def targets_of(labels: np.ndarray, multilabel: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Class indices (n,) int64; or a multi-label store's 0/1 (n, L) float32 and known (n, L)."""
    if multilabel:
        return np.clip(labels, 0, 1).astype(np.float32), labels >= 0
    return labels.astype(np.int64), None


def plan(inputs: ProbeInputs, support: np.ndarray, seed: int, folds_allowed: bool) -> Group:
    """The candidate models of one support set: (fold, weight decay) for every fold of its
    stratified split and every weight decay, or (folds not allowed: val chooses) one per weight
    decay on every row."""
    rows = np.asarray(support)
    labels = inputs.train_labels[rows]
    targets, known = targets_of(labels, inputs.multilabel)
    positions = np.arange(len(rows))
    if not folds_allowed:
        folds = [(positions, positions[:0])]
    elif inputs.multilabel:
        folds = multilabel_cv_folds(labels, seed) or []
    else:
        folds = cv_folds(labels, seed) or []
    fit, held, decay = [], [], []
    for fit_part, held_out in folds:
        for wd in WEIGHT_DECAYS:
            fit.append(np.isin(positions, fit_part))
            held.append(np.isin(positions, held_out))
            decay.append(wd)
    shape = (len(decay), len(rows))
    return Group(
        rows,
        targets,
        known,
        np.array(fit, np.float32).reshape(shape),
        np.array(held, np.float32).reshape(shape),
        np.array(decay, np.float32),
        seed,
    )


def best_decay(losses: "np.ndarray | list[float]") -> int:
    """The index into WEIGHT_DECAYS of the lowest loss; near-ties go to the larger weight decay
    (stronger regularisation); no finite loss: DEFAULT_WEIGHT_DECAY."""
    losses = np.nan_to_num(np.asarray(losses, dtype=float), nan=np.inf)
    if not np.isfinite(losses).any():
        return WEIGHT_DECAYS.index(DEFAULT_WEIGHT_DECAY)
    return int(np.flatnonzero(losses <= losses.min() + WEIGHT_DECAY_TIE)[-1])


def choose(group: Group, losses: np.ndarray) -> float:
    """The weight decay with the lowest mean held-out loss over the folds; losses (m,) per
    candidate, NaN where one has no held-out rows. No folds: `DEFAULT_WEIGHT_DECAY`."""
    if not group.cross_validated:
        return DEFAULT_WEIGHT_DECAY
    means = []
    for wd in WEIGHT_DECAYS:
        scored = (group.decay == np.float32(wd)) & (group.held.sum(1) > 0) & ~np.isnan(losses)
        means.append(losses[scored].mean() if scored.any() else np.inf)
    return WEIGHT_DECAYS[best_decay(means)]


def reader(tokens: TokenSource, split: str, rows: np.ndarray, device):
    """positions (c,) into `rows` -> their tokens (c, T, D) float32 on the device."""
    import torch

    def read(positions: np.ndarray) -> "torch.Tensor":
        return torch.as_tensor(tokens.read(split, rows[positions]), device=device)

    return read


def batches(members: list[int], groups: list[Group], shape: tuple[int, int]) -> list[list[int]]:
    """Groups trained together: the same number of models, at most BATCH_FLOATS between them
    (tokens, plus attention, pooled vectors and their gradients per model)."""
    n_tokens, dim = shape
    parts: list[list[int]] = []
    for n_models in sorted({len(groups[g].decay) for g in members}):
        part, held = [], 0
        for g in (g for g in members if len(groups[g].decay) == n_models):
            cost = len(groups[g].rows) * (n_tokens + 3 * max(n_models, 1) * N_QUERIES) * dim
            if part and held + cost > BATCH_FLOATS:
                parts.append(part)
                part, held = [], 0
            part.append(g)
            held += cost
        parts.append(part)
    return [part for part in parts if part]


def n_outputs(inputs: ProbeInputs) -> int:
    return inputs.train_labels.shape[1] if inputs.multilabel else inputs.n_classes


def entry_weights(rows: "torch.Tensor", known: "torch.Tensor | None") -> "torch.Tensor":
    """rows (G, m, n) -> what each loss entry counts: (G, m, n), or (G, m, n, L) with known."""
    return rows if known is None else rows[..., None] * known[:, None].float()


def mean_losses(
    probabilities: "torch.Tensor",
    targets: "torch.Tensor",
    weights: "torch.Tensor",
    multilabel: bool,
) -> np.ndarray:
    """Each model's weighted mean loss: probabilities (G, m, n, K), targets (G, n) int64 or
    (G, n, L) float 0/1, weights as `entry_weights` -> (G, m), NaN where a model has no weight."""
    import torch

    floor = P_FLOOR
    if multilabel:
        y = targets[:, None]
        losses = -(
            y * probabilities.clamp_min(floor).log()
            + (1 - y) * (1 - probabilities).clamp_min(floor).log()
        )
    else:
        index = targets[:, None, :, None].expand(-1, probabilities.shape[1], -1, 1)
        losses = -probabilities.gather(3, index)[..., 0].clamp_min(floor).log()
    total = weights.flatten(2).sum(2)
    mean = (losses * weights).flatten(2).sum(2) / total
    return torch.where(total > 0, mean, torch.nan).cpu().numpy()


def stacked_targets(groups: list[Group], n_rows: int, device):
    """targets (G, n) or (G, n, L), known (G, n, L) or None, fit and held (G, m, n), padded."""
    import torch

    def padded(values: list[np.ndarray], axis: int) -> "torch.Tensor":
        width = [(0, 0)] * values[0].ndim
        out = []
        for v in values:
            width[axis] = (0, n_rows - v.shape[axis])
            out.append(np.pad(v, width))
        return torch.as_tensor(np.stack(out), device=device)

    targets = padded([g.targets for g in groups], 0)
    known = None if groups[0].known is None else padded([g.known for g in groups], 0)
    return targets, known, padded([g.fit for g in groups], 1), padded([g.held for g in groups], 1)
