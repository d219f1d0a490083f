"""L2 logistic regression for many small problems at once, in torch.

A few-shot sweep is thousands of tiny fits (seeds x folds x C values); their arithmetic is
trivial and their per-fit overhead is not. Here every problem of a sweep step is padded into one
batch and solved by one batched L-BFGS (probe.lbfgs) in which each problem keeps its own step
sizes and stops on its own.

Each problem minimises sklearn's objective, divided by C·n so that values are well scaled:
    mean cross-entropy + ||W||² / (2·C·n)      (intercept not penalised)
on features standardised with the problem's rows (a problem may leave some of its rows out of
its loss: a multi-label head on the rows where its label is unknown; they still count in the
standardisation, and they share the row space). Two-class problems are sklearn's
binomial model: one logit (the second class's), a sigmoid, half the work of a 2-way softmax.
When rows are fewer than features, the problem is solved in the row space (W = Xᵀ·U·Λ^-½·β from
the Gram matrix's eigendecomposition), which turns an n x D problem into an n x n one.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medprobe.probe.fit.lbfgs import STOP_REASONS, minimise

if TYPE_CHECKING:  # torch is imported inside functions: `import medprobe.probe` stays light
    import torch

# Named grids, as DINOv2's linear evaluation names its own.
C_GRID: tuple[float, ...] = tuple(float(c) for c in 10.0 ** np.arange(-4, 2))
DEFAULT_C = 1.0  # sklearn's default, used when a class has fewer than 2 support images
# Few-shot problems are tiny, so they are solved to the optimum, in float64: a fit stopped at
# sklearn's default gradient of 1e-4 is up to 0.03 in probability from it, and where it stops
# depends on float32 rounding, so on threads and workers. At 1e-10 on the largest gradient entry
# (the tolerance of the scikit-learn reference in the tests) predictions agree to ~1e-9.
MAX_ITER = 1000
TOLERANCE_GRAD = 1e-10
# A float64 value that moves less than this (relative) has converged: scikit-learn's ftol.
RELATIVE_DECREASE = 0.0
# Gram eigenvalues below this fraction of the largest are rank deficiency (centring removes one
# direction; padded rows add zeros), not signal: their directions are dropped.
EIGEN_FLOOR = 1e-7
CV_FOLDS = 5


@dataclass(frozen=True)
class LinearProblem:
    """Fit on rows `rows` of the pool with class indices `labels`, at inverse penalty `C`; a
    label of -1 leaves its row out of the loss (but not out of the standardisation)."""

    rows: np.ndarray
    labels: np.ndarray
    C: float


@dataclass
class LinearFit:
    """B fitted models in the raw feature space: logits = X @ weights[b] + bias[b].

    weights (B, D, K) float64; bias (B, K) float64 (standardisation folded in); per problem,
    the solver's iterations (B,) int64, final gradient size (B,) (largest entry) and stop
    (B,) int64, an index into `lbfgs.STOP_REASONS`.
    """

    weights: "torch.Tensor"
    bias: "torch.Tensor"
    iterations: "torch.Tensor"
    gradient_size: "torch.Tensor"
    stop: "torch.Tensor"

    def reached_max_iter(self) -> "torch.Tensor":
        """(B,) bool: problems still moving when the iteration budget ran out."""
        return self.stop == STOP_REASONS.index("max_iter")

    def logits(self, features: "torch.Tensor") -> "torch.Tensor":
        """features (N, D) shared by all problems -> (B, N, K) float64."""
        import torch

        features = features.double()
        return torch.einsum("nd,bdk->bnk", features, self.weights) + self.bias[:, None, :]

    def logits_per_problem(self, features: "torch.Tensor") -> "torch.Tensor":
        """features (B, N, D), one set per problem -> (B, N, K) float64."""
        return features.double() @ self.weights + self.bias[:, None, :]


def fit_logistic(
    pool: "torch.Tensor",
    problems: Sequence[LinearProblem],
    n_classes: int,
    *,
    max_iter: int = MAX_ITER,
) -> LinearFit:
    """Fit every problem (rows drawn from `pool`, (N, D) float32) in one batched solve, in
    float64 to a largest gradient entry of `TOLERANCE_GRAD`.

    Problems on the same rows (a C grid over one fold, and every label of a multi-label fold)
    share one standardisation and one Gram matrix, and are stacked along the class axis so one
    wide product serves them all.
    """
    import torch

    device = pool.device
    groups: dict[bytes, list[int]] = {}
    for b, problem in enumerate(problems):
        groups.setdefault(np.asarray(problem.rows).tobytes(), []).append(b)
    members = list(groups.values())
    n_sets, width = len(members), max(len(m) for m in members)
    # Pad every group to `width` with copies of its first problem (their results are dropped).
    slots = [m + [m[0]] * (width - len(m)) for m in members]
    n_max = max(len(problems[m[0]].rows) for m in members)
    # Built on the host and moved once: thousands of per-problem copies would each be a
    # transfer on a GPU.
    index_host = np.zeros((n_sets, n_max), dtype=np.int64)
    targets_host = np.full((n_sets, width, n_max), -1, dtype=np.int64)
    mask_host = np.zeros((n_sets, n_max), dtype=bool)
    for u, slot in enumerate(slots):
        rows = problems[slot[0]].rows
        index_host[u, : len(rows)] = rows
        targets_host[u, :, : len(rows)] = [problems[b].labels for b in slot]
        mask_host[u, : len(rows)] = True
    index = torch.as_tensor(index_host, device=device)
    targets = torch.as_tensor(targets_host, device=device)
    mask = torch.as_tensor(mask_host, device=device)
    known = targets >= 0  # (sets, width, rows): the rows in each problem's loss
    targets = targets.clamp_min(0)
    n_known = known.sum(2).clamp_min(1).double()  # (sets, width)
    weight = mask.unsqueeze(-1).double()
    n_rows = mask.sum(1).double()
    standardised = pool[index].double().mul_(weight)
    mean = standardised.sum(1) / n_rows[:, None]
    standardised.sub_(mean[:, None]).mul_(weight)
    std = torch.linalg.vector_norm(standardised, dim=1) / n_rows[:, None].sqrt()
    std = torch.where(std < 1e-8, torch.ones_like(std), std)  # constant features, as sklearn
    standardised.div_(std[:, None])
    inverse_c = torch.tensor(
        [[1.0 / problems[b].C for b in slot] for slot in slots], dtype=torch.float64, device=device
    )
    penalty = inverse_c / n_known  # (sets, width)
    binary = n_classes == 2
    outputs = 1 if binary else n_classes  # logits per problem
    # The loss's curvature at equal probabilities: p(1 - p) of a sigmoid, about 1/K of a softmax.
    curvature_at_start = 0.25 if binary else 1.0 / n_classes
    dim = pool.shape[1]
    reduced = n_max < dim
    if reduced:
        # Fewer rows than features: the solution lies in the span of the rows (representer
        # theorem), so solve the same problem on Z = U·Λ^½ from the eigendecomposition of the
        # Gram matrix X·Xᵀ = U·Λ·Uᵀ. Z has at most n columns, and unlike a dual in the
        # coefficients A of W = Xᵀ·A (whose curvature is the Gram matrix squared) it is exactly
        # as well conditioned as the problem on X, so L-BFGS needs far fewer steps.
        gram = standardised @ standardised.transpose(1, 2)
        eigenvalues, eigenvectors = torch.linalg.eigh(gram)
        kept = eigenvalues > EIGEN_FLOOR * eigenvalues[:, -1:].clamp_min(1e-30)
        root = torch.where(kept, eigenvalues.clamp_min(0).sqrt(), 0.0)
        design = eigenvectors * root[:, None, :]  # (sets, rows, n_max)
        # Z'Z = Λ, so the curvature near the start is about a·Λ/n + penalty, diagonal (a: the
        # loss's curvature at equal probabilities): L-BFGS runs on β with
        # coef = β·(a·Λ/n + penalty)^-½, which turns the spread of Λ into a spread near 1.
        # (The same change of variables on XᵀX's eigenbasis, tried for rows >= features, made
        # the slowest problems of a weakly penalised grid several times slower.)
        curvature = eigenvalues.clamp_min(0)[:, None, :] / n_known[:, :, None]
        precondition = (curvature * curvature_at_start + penalty[:, :, None]).rsqrt()
        precondition = torch.where(kept[:, None, :], precondition, 0.0)
    else:
        design = standardised  # (sets, rows, dim)
        precondition = torch.ones(n_sets, width, dim, dtype=torch.float64, device=device)
    # Class-major layout (sets, width * K, rows): narrow-by-wide batched products run about
    # twice as fast on CPU as wide-by-narrow ones.
    design_by_column = design.transpose(1, 2).contiguous()
    if binary:  # the target of the one logit: is it the second class
        one_hot = (targets == 1).double()[:, :, None, :]  # (sets, width, 1, rows)
    else:
        one_hot = torch.nn.functional.one_hot(targets, n_classes).transpose(2, 3).double()
    one_hot = one_hot * known[:, :, None, :]  # (sets, width, K, rows)
    row_weight = (known.double() / n_known[:, :, None])[:, :, None, :]  # a mean over its rows
    batch = _Batch(design, design_by_column, one_hot, row_weight, penalty, precondition)
    # The intercept's curvature is the loss's.
    intercept_scale = curvature_at_start**-0.5
    n_coef = outputs * design.shape[2]
    taken: list[tuple[torch.Tensor, torch.Tensor, _Batch]] = []

    def objective(flat: torch.Tensor, moving: torch.Tensor):
        """Objective and analytic gradient of every moving problem, evaluated on the smallest
        rectangle of (row sets x columns) that holds them: the problems of a batch converge
        after very different numbers of steps (a weak penalty on a near-separable support takes
        ten times the median), and evaluating the finished ones at every step of the slowest
        was most of a sweep's time. Problems outside the rectangle get zeros (the solver
        ignores them). flat (sets * width, K * columns + K) -> values (sets * width,),
        gradients (same shape as flat), sizes (sets * width,)."""
        live = moving.view(n_sets, width)
        sets = live.any(1).nonzero().squeeze(1)
        columns = live.any(0).nonzero().squeeze(1)
        state = flat.view(n_sets, width, -1)
        if len(sets) == n_sets and len(columns) == width:
            values, grad, sizes = _evaluate(batch, state, binary, intercept_scale)
            return values.reshape(-1), grad.reshape(len(flat), -1), sizes.reshape(-1)
        # An iteration's first trial and its backtracks see two rectangles, which change
        # only when a problem stops: each is gathered once and kept.
        for known_sets, known_columns, known_part in taken:
            if torch.equal(known_sets, sets) and torch.equal(known_columns, columns):
                part = known_part
                break
        else:
            part = batch.take(sets, columns)
            taken[:] = [*taken[-1:], (sets, columns, part)]
        values, grad, sizes = _evaluate(part, state[sets][:, columns], binary, intercept_scale)
        where = (sets[:, None], columns[None, :])
        all_values = flat.new_zeros(n_sets, width)
        all_grad = torch.zeros_like(state)
        all_sizes = flat.new_zeros(n_sets, width)
        all_values[where], all_grad[where], all_sizes[where] = values, grad, sizes
        return all_values.reshape(-1), all_grad.reshape(len(flat), -1), all_sizes.reshape(-1)

    start = torch.zeros(n_sets * width, n_coef + outputs, dtype=torch.float64, device=device)
    minimum = minimise(
        objective,
        start,
        max_iter=max_iter,
        tolerance_grad=TOLERANCE_GRAD,
        relative_decrease=RELATIVE_DECREASE,
    )
    with torch.no_grad():
        coef, intercept = batch.unscaled(minimum.x.view(n_sets, width, -1), intercept_scale)
        coef = coef.reshape(n_sets, width * outputs, -1)
        if reduced:  # W = Xᵀ·U·Λ^-½·β, back in the standardised feature space
            inverse_root = torch.where(kept, 1.0 / root.clamp_min(1e-30), 0.0)
            back = (eigenvectors * inverse_root[:, None, :]).transpose(1, 2)
            coef = (coef @ back) @ standardised  # this order: (width·K x n x n), not (n x n x D)
        weights = coef.view(n_sets, width, outputs, dim)
        if binary:  # as two logits, the first 0: a softmax over them is the sigmoid
            weights = torch.cat([torch.zeros_like(weights), weights], dim=2)
            intercept = torch.cat([torch.zeros_like(intercept), intercept], dim=2)
        raw_weights = weights / std[:, None, None, :]
        raw_bias = intercept - torch.einsum("ud,ugkd->ugk", mean / std, weights)
    position = {b: (u, j) for u, group in enumerate(members) for j, b in enumerate(group)}
    sets = torch.tensor([position[b][0] for b in range(len(problems))], device=device)
    columns = torch.tensor([position[b][1] for b in range(len(problems))], device=device)
    flat = sets * width + columns  # each problem's row in the solver's batch
    return LinearFit(
        raw_weights[sets, columns].transpose(1, 2),
        raw_bias[sets, columns],
        minimum.iterations[flat],
        minimum.gradient_size[flat],
        minimum.stop[flat],
    )


@dataclass(frozen=True)
class _Batch:
    """The solver's inputs for S row sets x W problems each (K logits per problem):
    design (S, rows, columns) and design_by_column (S, columns, rows) float64; one_hot
    (S, W, K, rows) (zero on rows out of the loss); row_weight (S, W, 1, rows), 1/n on a
    problem's rows; penalty (S, W) = 1/(C·n); precondition (S, W, columns), the scale of the
    solver's variables (coef = variables · precondition)."""

    design: "torch.Tensor"
    design_by_column: "torch.Tensor"
    one_hot: "torch.Tensor"
    row_weight: "torch.Tensor"
    penalty: "torch.Tensor"
    precondition: "torch.Tensor"

    def take(self, sets: "torch.Tensor", columns: "torch.Tensor") -> "_Batch":
        """The rectangle of row sets `sets` (s,) x problems `columns` (w,)."""
        return _Batch(
            self.design[sets],
            self.design_by_column[sets],
            self.one_hot[sets][:, columns],
            self.row_weight[sets][:, columns],
            self.penalty[sets][:, columns],
            self.precondition[sets][:, columns],
        )

    def unscaled(
        self, state: "torch.Tensor", intercept_scale: float
    ) -> tuple["torch.Tensor", "torch.Tensor"]:
        """Solver variables (S, W, K·columns + K) -> coef (S, W, K, columns), intercept (S, W, K)
        in the problem's own units."""
        n_sets, width, outputs = self.one_hot.shape[:3]
        n_coef = outputs * self.design.shape[2]
        coef = state[:, :, :n_coef].reshape(n_sets, width, outputs, -1)
        return coef * self.precondition[:, :, None, :], state[:, :, n_coef:] * intercept_scale


def _evaluate(batch: _Batch, state: "torch.Tensor", binary: bool, intercept_scale: float):
    """Values (S, W), gradients (S, W, P) with respect to the solver's variables and the largest
    gradient entry with respect to the unscaled coefficients (S, W), of every problem of `batch`
    at `state` (S, W, P): one batched product with the design matrix each way, instead of
    autograd's several."""
    import torch

    n_sets, width, outputs, n_rows = batch.one_hot.shape
    coef, intercept = batch.unscaled(state, intercept_scale)  # (S, W, K, columns), (S, W, K)
    logits = (coef.reshape(n_sets, width * outputs, -1) @ batch.design_by_column).view(
        batch.one_hot.shape
    ) + intercept[..., None]
    one_hot = batch.one_hot
    if binary:
        losses = torch.nn.functional.softplus(logits) - one_hot * logits
        probabilities = torch.sigmoid(logits)
    else:  # by hand: torch's log_softmax over a short axis is slow on CPU
        largest = logits.amax(2, keepdim=True)
        probabilities = (logits - largest).exp_()
        total = probabilities.sum(2, keepdim=True)
        probabilities /= total
        losses = (total.log_() + largest - logits) * one_hot
    data_term = (losses * batch.row_weight).sum((2, 3))
    residual = (probabilities - one_hot) * batch.row_weight  # d(data term)/d(logits)
    penalty = batch.penalty[:, :, None, None]
    coef_grad = (residual.reshape(n_sets, width * outputs, n_rows) @ batch.design).view(
        coef.shape
    ) + penalty * coef
    intercept_grad = residual.sum(3)
    sizes = torch.maximum(coef_grad.abs().amax((2, 3)), intercept_grad.abs().amax(2))
    grad = torch.cat(
        [
            (coef_grad * batch.precondition[:, :, None, :]).reshape(n_sets, width, -1),
            intercept_grad * intercept_scale,
        ],
        dim=2,
    )
    values = data_term + 0.5 * batch.penalty * (coef**2).sum((2, 3))
    return values, grad, sizes
