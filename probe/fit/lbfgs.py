"""L-BFGS for a batch of independent problems, each with its own step size and its own stop.

torch.optim.LBFGS treats a batch as one problem: one line search, one stopping test, so every
problem takes as many steps as the hardest one and a step length that suits none in particular.
Here each problem keeps its own curvature history, backtracks its own Armijo line search and
stops when its own gradient is small; all of them are still evaluated in one batched call, and
the objective is told which problems are still moving so it may skip the rest.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported inside functions: `import medprobe.probe` stays light
    import torch

# x (B, P), moving (B,) bool -> values (B,), gradients (B, P), gradient sizes (B,). Rows that are
# not moving may hold anything; the size is what the stopping test compares with the tolerance
# (the largest gradient entry in the problem's own parametrisation, as scikit-learn's gtol).
Objective = Callable[
    ["torch.Tensor", "torch.Tensor"], "tuple[torch.Tensor, torch.Tensor, torch.Tensor]"
]

ARMIJO = 1e-4  # sufficient-decrease constant, as in most line searches
MAX_BACKTRACKS = 10  # a step 1/1024 of the L-BFGS step that still fails: nothing left to gain
# float32 resolves ~1e-7 relative; a problem whose value moves less than this has converged.
RELATIVE_DECREASE = 1e-6
STOP_REASONS = ("gradient", "no progress", "line search", "max_iter")


@dataclass
class Minimum:
    """Where each of the B problems stopped, and why.

    x (B, P); iterations (B,) int64; gradient_size (B,) float32, the stopping measure at x;
    stop (B,) int64, an index into STOP_REASONS: "max_iter" means the problem was still moving
    when the iteration budget ran out (it did not converge).
    """

    x: "torch.Tensor"
    iterations: "torch.Tensor"
    gradient_size: "torch.Tensor"
    stop: "torch.Tensor"

    def reason(self, problem: int) -> str:
        return STOP_REASONS[int(self.stop[problem])]


def minimise(
    objective: Objective,
    start: "torch.Tensor",
    *,
    max_iter: int,
    tolerance_grad: float,
    history: int = 10,
    relative_decrease: float = RELATIVE_DECREASE,
) -> Minimum:
    """Minimise B independent smooth functions at once.

    objective: see `Objective`. A problem stops when its gradient size is below
    `tolerance_grad`, when an iteration neither lowers its value by `relative_decrease`
    (relative; float32's resolution by default) nor shrinks its gradient, when its line search
    fails, or after `max_iter` iterations (as scikit-learn's lbfgs counts them).
    """
    import torch

    n_problems = len(start)
    device = start.device
    # The solver works on the problems still moving: when half of them have stopped, the rest
    # are packed into smaller tensors (their histories with them), so that the last few of a
    # large batch do not pay for every finished one at each step. `rows` maps the working set
    # to the batch; a stopped problem's record is written back when it leaves.
    rows = torch.arange(n_problems, device=device)
    batch_x = start.clone()  # what the objective sees: the working set written into the batch

    def evaluate(x: "torch.Tensor", moving: "torch.Tensor"):
        if len(rows) == n_problems:
            return objective(x, moving)
        batch_x[rows] = x
        batch_moving = torch.zeros(n_problems, dtype=torch.bool, device=device)
        batch_moving[rows] = moving
        value, grad, size = objective(batch_x, batch_moving)
        return value[rows], grad[rows], size[rows]

    x = start.clone()
    active = torch.ones(n_problems, dtype=torch.bool, device=device)
    value, grad, size = evaluate(x, active)
    steps: list[torch.Tensor] = []
    changes: list[torch.Tensor] = []
    inverse_curvature: list[torch.Tensor] = []
    active = size > tolerance_grad
    stop = torch.where(active, STOP_REASONS.index("max_iter"), STOP_REASONS.index("gradient"))
    iterations = torch.zeros(n_problems, dtype=torch.long, device=device)
    record = Minimum(x.clone(), iterations.clone(), size.clone(), stop.clone())
    for iteration in range(max_iter):
        if not active.any():
            break
        if int(active.sum()) <= len(rows) // 2:
            _write_back(record, rows, x, iterations, size, stop)
            keep = active.nonzero().squeeze(1)
            rows, x, value, grad, size = rows[keep], x[keep], value[keep], grad[keep], size[keep]
            stop, iterations, active = stop[keep], iterations[keep], active[keep]
            steps = [step[keep] for step in steps]
            changes = [change[keep] for change in changes]
            inverse_curvature = [rho[keep] for rho in inverse_curvature]
        direction = _two_loop(grad, steps, changes, inverse_curvature)
        slope = (grad * direction).sum(1)
        uphill = slope >= 0  # a stale history can point uphill: fall back to steepest descent
        direction[uphill] = -grad[uphill]
        slope = torch.where(uphill, -(grad**2).sum(1), slope)
        if iteration == 0:
            length = torch.clamp(1.0 / grad.abs().sum(1), max=1.0)
        else:
            length = torch.ones_like(slope)
        pending = active.clone()
        resolution = relative_decrease * value.abs().clamp_min(1.0)
        new_x, new_value, new_grad, new_size = x.clone(), value.clone(), grad.clone(), size.clone()
        for _ in range(MAX_BACKTRACKS):
            trial = x + length[:, None] * direction
            trial_value, trial_grad, trial_size = evaluate(trial, pending)
            # Armijo's sufficient decrease; or, where the value can no longer resolve the
            # decrease (within `relative_decrease` of it), a step that does not raise the value
            # and shrinks the gradient: near the optimum the gradient still tells progress
            # apart when the value's rounding cannot (as Hager & Zhang's approximate Wolfe test).
            flat = (trial_value <= value + resolution) & (trial_size < size)
            accept = pending & ((trial_value <= value + ARMIJO * length * slope) | flat)
            new_x[accept], new_value[accept], new_grad[accept], new_size[accept] = (
                trial[accept],
                trial_value[accept],
                trial_grad[accept],
                trial_size[accept],
            )
            pending &= ~accept
            if not pending.any():
                break
            length = torch.where(pending, length * 0.5, length)
        step, change = new_x - x, new_grad - grad
        curvature = (step * change).sum(1)
        # Only pairs with positive curvature keep the inverse Hessian estimate positive definite;
        # "positive" beyond the rounding of s·y (relative to |s|·|y|, not absolute: a float64
        # solve near its optimum takes steps whose s·y is far below any fixed floor, and
        # dropping those pairs would leave it creeping by steepest descent).
        rounding = torch.finfo(curvature.dtype).eps * step.norm(dim=1) * change.norm(dim=1)
        curving = curvature > rounding
        inverse_curvature.append(
            torch.where(curving, 1.0 / torch.where(curving, curvature, 1.0), 0.0)
        )
        steps.append(step)
        changes.append(change)
        if len(steps) > history:
            steps.pop(0), changes.pop(0), inverse_curvature.pop(0)
        # Progress: the value fell beyond its resolution, or the gradient shrank.
        progress = ((value - new_value) > resolution) | (new_size < size)
        iterations += active.long()
        x, value, grad, size = new_x, new_value, new_grad, new_size
        # A problem stops on a small gradient, on no real progress, or on a failed line search.
        for reason, stopped in (
            ("line search", active & pending),
            ("no progress", active & ~progress),
            ("gradient", active & (size <= tolerance_grad)),
        ):
            stop[stopped] = STOP_REASONS.index(reason)
        active &= (size > tolerance_grad) & progress & ~pending
    _write_back(record, rows, x, iterations, size, stop)
    return record


def _write_back(record: Minimum, rows, x, iterations, size, stop) -> None:
    """Copy the working set's state into the batch's record, at the problems `rows`."""
    record.x[rows], record.iterations[rows] = x, iterations
    record.gradient_size[rows], record.stop[rows] = size, stop


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
