"""The full budget's logistic regression in torch: every C of the grid, for every label, in one
chunked solve over the train rows (`probe.fit.full_logistic`), and the protocol's choice of C.

With a val split, the fit at the chosen C is the final model: it is the model scikit-learn fits
at that C on the same rows, so a second fit would only repeat it. Nothing is approximated: C is
chosen on the whole train split, and each kept fit is solved to the optimum in float64 (largest
gradient entry 1e-10), so its numbers do not depend on threads or workers: from the start where
the train split is small (`full_logistic.FLOAT64_ELEMENTS`), else the grid is solved in float32
to scikit-learn's criterion (1e-4), where a pass over the rows is the cost, and the kept fits are
polished in float64 from there, with only the chosen C in the products. Fits that use up
max_iter say so. Without a val split, each (label, fold) of the stratified k-fold split is one
more head of the same solve (a mask over the rows), and one more solve refits every label at its
chosen C.
"""

from typing import TYPE_CHECKING

import numpy as np

from medprobe.probe.fit.full_logistic import FLOAT64_ELEMENTS, fit_heads, mean_log_loss
from medprobe.probe.fit.lbfgs import STOP_REASONS
from medprobe.probe.fit.logistic import C_GRID, DEFAULT_C
from medprobe.probe.fit.protocol import P_FLOOR, FitReport, best_c, binary_targets, cv_folds

if TYPE_CHECKING:  # torch is imported inside functions: `import medprobe.probe` stays light
    import torch

MAX_ITER_INDEX = STOP_REASONS.index("max_iter")


def _targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, H) int64 targets and the known mask (or None) of single- or multi-label rows."""
    if labels.ndim == 2:
        return binary_targets(labels)
    return labels.astype(np.int64)[:, None], None


def full_budget_logreg(
    features: "torch.Tensor",
    labels: np.ndarray,
    test: "torch.Tensor",
    *,
    n_classes: int,
    seed: int,
    max_iter: int,
    val: "torch.Tensor | None" = None,
    val_labels: np.ndarray | None = None,
) -> tuple[np.ndarray, list[FitReport]]:
    """Test probabilities and one FitReport per label.

    features (N, D) float32 on the device (read in place); labels (N,) int64, or (N, L) int8
    with -1 unknown (each column a binary label); test (M, D); val (V, D) and val_labels as
    labels, or None. Returns (M, K) class probabilities, or (M, L) positive-class ones.
    """
    import torch

    device = features.device
    multilabel = labels.ndim == 2
    targets, known = _targets(labels)
    n_heads = targets.shape[1]

    def on_device(values: np.ndarray | None) -> "torch.Tensor | None":
        return None if values is None else torch.as_tensor(values, device=device)

    solve = dict(n_classes=2 if multilabel else n_classes, max_iter=max_iter)
    if val is not None:
        fit = fit_heads(features, on_device(targets), on_device(known), C_GRID, **solve)
        val_targets, val_known = _targets(val_labels)
        losses = mean_log_loss(
            fit, val, on_device(val_targets), on_device(val_known), floor=P_FLOOR
        ).reshape(len(C_GRID), n_heads)
        chosen = [best_c(losses[:, h]) for h in range(n_heads)]
        final, final_problems = fit, [C_GRID.index(c) * n_heads + h for h, c in enumerate(chosen)]
        reached = (fit.minimum.stop == MAX_ITER_INDEX).view(len(C_GRID), n_heads)
        unconverged = [
            int(reached[:, h].sum()) - int(reached[C_GRID.index(c), h])
            for h, c in enumerate(chosen)
        ]
    else:
        chosen, unconverged = _cross_validation(features, targets, known, seed, solve)
        final = fit_heads(
            features, on_device(targets), on_device(known), np.array([chosen]), **solve
        )
        final_problems = list(range(n_heads))
    if features.numel() > FLOAT64_ELEMENTS:  # solved in float32: polish the kept fits
        final = fit_heads(
            features,
            on_device(targets),
            on_device(known),
            np.array([chosen]),
            precise=True,
            initial=final.select(final_problems),
            **solve,
        )
        final_problems = list(range(n_heads))
    scores = final.probabilities(test, final_problems).float().cpu().numpy()
    reports = [
        FitReport(
            seed,
            h if multilabel else None,
            chosen[h],
            int(final.minimum.iterations[problem]),
            float(final.minimum.gradient_size[problem]),
            final.minimum.reason(problem),
            unconverged[h],
        )
        for h, problem in enumerate(final_problems)
    ]
    return (scores[:, :, 1] if multilabel else scores[:, 0]), reports


def _cross_validation(features, targets, known, seed, solve) -> tuple[list[float], list[int]]:
    """C per label by the mean stratified k-fold log-loss on the rows; returns (C per label,
    fits of the grid that used up max_iter per label)."""
    import torch

    n_rows, n_heads = targets.shape
    known = np.ones((n_rows, n_heads), bool) if known is None else known
    head_targets, fit_masks, held_masks, owner = [], [], [], []
    for h in range(n_heads):
        rows = np.flatnonzero(known[:, h])
        for fit_part, held_out in cv_folds(targets[rows, h], seed) or []:
            fit_mask = np.zeros(n_rows, bool)
            fit_mask[rows[fit_part]] = True
            held_mask = np.zeros(n_rows, bool)
            held_mask[rows[held_out]] = True
            head_targets.append(targets[:, h])
            fit_masks.append(fit_mask)
            held_masks.append(held_mask)
            owner.append(h)
    chosen, unconverged = [DEFAULT_C] * n_heads, [0] * n_heads
    if not owner:
        return chosen, unconverged
    device = features.device
    stacked = torch.as_tensor(np.stack(head_targets, 1), device=device)
    fit_mask = torch.as_tensor(np.stack(fit_masks, 1), device=device)
    fit = fit_heads(features, stacked, fit_mask, C_GRID, **solve)
    held_mask = torch.as_tensor(np.stack(held_masks, 1), device=device)
    losses = mean_log_loss(fit, features, stacked, held_mask, floor=P_FLOOR)
    losses = losses.reshape(len(C_GRID), len(owner))
    reached = (fit.minimum.stop == MAX_ITER_INDEX).cpu().numpy().reshape(len(C_GRID), len(owner))
    owner = np.array(owner)
    for h in np.unique(owner):
        chosen[h] = best_c(losses[:, owner == h].mean(1))
        unconverged[h] = int(reached[:, owner == h].sum())
    return chosen, unconverged
