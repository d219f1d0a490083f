"""L-BFGS for a batch of independent problems, each with its own step size and its own stop.

torch.optim.LBFGS treats a batch as one problem: one line search, one stopping test, so every
problem takes as many steps as the hardest one and a step length that suits none in particular.
Here each problem keeps its own curvature history, backtracks its own Armijo line search and
stops when its own gradient is small; all of them are still evaluated in one batched call.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported inside functions: `import medprobe.probe` stays light
    import torch

Objective = Callable[["torch.Tensor"], "tuple[torch.Tensor, torch.Tensor]"]

ARMIJO = 1e-4  # sufficient-decrease constant, as in most line searches
MAX_BACKTRACKS = 10  # a step 1/1024 of the L-BFGS step that still fails: nothing left to gain
# float32 resolves ~1e-7 relative; a problem whose value moves less than this has converged.
RELATIVE_DECREASE = 1e-6


def minimise(
    objective: Objective,
    start: "torch.Tensor",
    *,
    max_iter: int,
    tolerance_grad: float,
    history: int = 10,
) -> "torch.Tensor":
    """Minimise B independent smooth functions at once.

    objective: x (B, P) -> (values (B,), gradients (B, P)). Returns the minimisers (B, P).
    A problem stops when the largest entry of its gradient is below `tolerance_grad`, when its
    value no longer decreases by a relative 1e-6 (float32's resolution), when its line search
    fails, or after `max_iter` iterations (as scikit-learn's lbfgs counts them).
    """
    import torch

    x = start.clone()
    value, grad = objective(x)
    steps: list[torch.Tensor] = []
    changes: list[torch.Tensor] = []
    inverse_curvature: list[torch.Tensor] = []
    active = grad.abs().amax(1) > tolerance_grad
    for iteration in range(max_iter):
        if not active.any():
            break
        direction = _two_loop(grad, steps, changes, inverse_curvature)
        slope = (grad * direction).sum(1)
        uphill = slope >= 0  # a stale history can point uphill: fall back to steepest descent
        direction[uphill] = -grad[uphill]
        slope = torch.where(uphill, -(grad**2).sum(1), slope)
        if iteration == 0:
            length = torch.clamp(1.0 / grad.abs().sum(1), max=1.0)
        else:
            length = torch.ones_like(value)
        pending = active.clone()
        new_x, new_value, new_grad = x.clone(), value.clone(), grad.clone()
        for _ in range(MAX_BACKTRACKS):
            trial = x + length[:, None] * direction
            trial_value, trial_grad = objective(trial)
            accept = pending & (trial_value <= value + ARMIJO * length * slope)
            new_x[accept], new_value[accept], new_grad[accept] = (
                trial[accept],
                trial_value[accept],
                trial_grad[accept],
            )
            pending &= ~accept
            if not pending.any():
                break
            length = torch.where(pending, length * 0.5, length)
        step, change = new_x - x, new_grad - grad
        curvature = (step * change).sum(1)
        # Only pairs with positive curvature keep the inverse Hessian estimate positive definite.
        inverse_curvature.append(
            torch.where(
                curvature > 1e-10, 1.0 / curvature.clamp_min(1e-10), torch.zeros_like(curvature)
            )
        )
        steps.append(step)
        changes.append(change)
        if len(steps) > history:
            steps.pop(0), changes.pop(0), inverse_curvature.pop(0)
        progress = (value - new_value) > RELATIVE_DECREASE * value.abs().clamp_min(1.0)
        x, value, grad = new_x, new_value, new_grad
        # A problem stops on a small gradient, on no real progress, or on a failed line search.
        active &= (grad.abs().amax(1) > tolerance_grad) & progress & ~pending
    return x


def _two_loop(grad, steps, changes, inverse_curvature):
    """The L-BFGS direction -H·grad from the stored pairs, per problem."""
    import torch

    q = grad.clone()
    alphas = []
    for s, y, rho in zip(
        reversed(steps), reversed(changes), reversed(inverse_curvature), strict=True
    ):
        alpha = rho * (s * q).sum(1)
        q -= alpha[:, None] * y
        alphas.append(alpha)
    if steps:
        s, y, rho = steps[-1], changes[-1], inverse_curvature[-1]
        yy = (y * y).sum(1)
        gamma = torch.where(
            (rho > 0) & (yy > 0), 1.0 / (rho * yy).clamp_min(1e-30), torch.ones_like(yy)
        )
        q *= gamma[:, None]
    for s, y, rho, alpha in zip(steps, changes, inverse_curvature, reversed(alphas), strict=True):
        beta = rho * (y * q).sum(1)
        q += (alpha - beta)[:, None] * s
    return -q
