"""Logistic regression on every train row: all C values of the grid, and all labels of a store
(or all folds), in one solve whose passes over the rows are shared.

At full data a fit costs passes over X (N x D), not arithmetic per pass, so:
- one pass serves every problem: each (C, head) is a column block of one product X·V, where a
  head is what is predicted from which rows (the classes of a single-label store, one label of a
  multi-label store on the rows where it is known, or one cross-validation fold);
- the rows are read in chunks and centred on the fly (1/std is folded into V): X is never copied,
  and each chunk is reused by the forward and the backward product while it is in cache;
- preconditioning: with Σ = U·Λ·Uᵀ the covariance of the standardised features (one
  eigendecomposition, from evenly spaced rows), the weights are W = U·diag(h)·β with
  h = (a·Λ + λ)^-½ (a the loss curvature at the start, λ the penalty), so L-BFGS sees a problem
  whose curvature is near the identity instead of spread over Λ's three orders of magnitude
  (real embeddings' singular values fall like k^-½). Only the variables change: the objective,
  and so the minimiser, are scikit-learn's.

Each problem minimises scikit-learn's objective divided by n:
    mean log-loss over the head's rows + ||W||² / (2·C·n)      (intercept not penalised)
on features standardised with the head's own rows (StandardScaler: population std, constant
features left at scale 1, so they get weight 0). Binary heads are scikit-learn's binomial model
(one sigmoid), K >= 3 classes its multinomial one; a class absent from a head's rows gets
probability 0, as scikit-learn fits only the classes it sees.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medprobe.probe.fit.lbfgs import Minimum, minimise

if TYPE_CHECKING:  # torch is imported inside functions: `import medprobe.probe` stays light
    import torch

# Rows centred and multiplied at a time: 16 MB at 1,024 dims, small enough to stay in cache
# between the forward and the backward product.
CHUNK_ROWS = 4096
PRECONDITIONER_ROWS = 32768  # rows whose covariance gives the preconditioner's basis
ABSENT_LOGIT = -1e4  # logit offset of a class a head never sees: probability 0, gradient 0
CONSTANT_STD = 1e-8  # a feature whose std is below this is constant (scale 1, as sklearn)
# Train sets up to this many feature values (4M: 4,096 rows of 1,024 dims) are solved in
# float64 to the optimum (gradient 1e-10, the few-shot solver's rule) from the start. Larger
# grids are solved in float32 to scikit-learn's stopping rule, where a pass over X, not the
# arithmetic, is the cost; that is enough to choose C (held-out log loss moves far less than the
# choice needs), but where a float32 fit stops depends on the rounding of its products, so its
# log loss, ECE and scores would move with the number of threads and workers (0.45 vs 0.51 log
# loss on 200 images). The models kept are therefore polished in float64 to the same optimum,
# started from the float32 fit (`initial`), with only the chosen C in the products.
FLOAT64_ELEMENTS = 2**22
PRECISE_TOLERANCE_GRAD = 1e-10
# scikit-learn's lbfgs stopping rule: the largest entry of the gradient of this same objective.
TOLERANCE_GRAD = 1e-4
# Values are accumulated in float64, so "no progress" can be judged far below float32's 1e-7;
# it only ends fits that the float32 products cannot move any more.
RELATIVE_DECREASE = 1e-9


@dataclass
class HeadFit:
    """P = G x H fitted problems (C-major: problem g·H + h is C value g on head h), kept in the
    globally standardised space z = (x - mean) / std: logits = z @ weights[p] + bias[p].

    weights (P, D, K_out) float64 or float32 (see `fit_heads`), K_out = 1 for binary heads (the
    positive class's logit); bias (P, K_out); mean, std (D,); minimum: the solver's record per
    problem.
    """

    weights: "torch.Tensor"
    bias: "torch.Tensor"
    mean: "torch.Tensor"
    std: "torch.Tensor"
    binary: bool
    n_heads: int
    minimum: Minimum

    def select(self, problems: Sequence[int]) -> "HeadFit":
        """The fit of `problems` only (their solver records with them), e.g. each head's
        chosen C; `n_heads` becomes len(problems), so problem h is head h."""
        import torch

        index = torch.as_tensor(list(problems), device=self.weights.device)
        record = self.minimum
        minimum = Minimum(
            record.x[index],
            record.iterations[index],
            record.gradient_size[index],
            record.stop[index],
        )
        return HeadFit(
            self.weights[index],
            self.bias[index],
            self.mean,
            self.std,
            self.binary,
            len(index),
            minimum,
        )

    def probabilities(
        self, features: "torch.Tensor", problems: Sequence[int], *, chunk_rows: int = CHUNK_ROWS
    ) -> "torch.Tensor":
        """(M, len(problems), K) class probabilities of raw rows (M, D); K = 2 for binary."""
        import torch

        index = torch.as_tensor(list(problems), device=self.weights.device)
        weights = (self.weights[index] / self.std[None, :, None]).permute(1, 0, 2)
        bias = self.bias[index]
        flat_weights = weights.reshape(weights.shape[0], -1)
        parts = []
        for start in range(0, len(features), chunk_rows):
            centred = features[start : start + chunk_rows] - self.mean
            logits = (centred @ flat_weights).view(len(centred), len(index), -1) + bias
            if self.binary:
                positive = torch.sigmoid(logits)
                parts.append(torch.cat([1 - positive, positive], dim=2))
            else:
                parts.append(torch.softmax(logits, dim=2))
        return torch.cat(parts)


def _moments(
    features: "torch.Tensor", chunk_rows: int, real: "torch.dtype"
) -> "tuple[torch.Tensor, torch.Tensor]":
    """Mean and population std of each column (D,) as `real`, accumulated in float64 chunk by
    chunk (Chan's pairwise update), without copying `features`."""
    import torch

    count, mean, squares = 0, None, None
    for start in range(0, len(features), chunk_rows):
        chunk = features[start : start + chunk_rows]
        chunk_mean = chunk.sum(0, dtype=torch.float64) / len(chunk)
        centred = chunk.to(real) - chunk_mean.to(real)
        chunk_squares = (centred * centred).sum(0, dtype=torch.float64)
        if mean is None:
            count, mean, squares = len(chunk), chunk_mean, chunk_squares
            continue
        total = count + len(chunk)
        delta = chunk_mean - mean
        squares = squares + chunk_squares + delta**2 * count * len(chunk) / total
        mean = mean + delta * len(chunk) / total
        count = total
    std = (squares / count).sqrt()
    std = torch.where(std < CONSTANT_STD, torch.ones_like(std), std)
    return mean.to(real), std.to(real)


def fit_heads(
    features: "torch.Tensor",
    targets: "torch.Tensor",
    mask: "torch.Tensor | None",
    c_values: "Sequence[float] | np.ndarray",
    *,
    n_classes: int,
    max_iter: int,
    tolerance_grad: float | None = None,
    relative_decrease: float | None = None,
    chunk_rows: int = CHUNK_ROWS,
    precise: bool | None = None,
    initial: HeadFit | None = None,
) -> HeadFit:
    """Fit every (C, head) problem on the shared rows in one solve.

    features (N, D) float32, read in chunks and never copied; targets (N, H) int64, class
    indices (n_classes >= 3) or 0/1 (n_classes == 2: binary heads); mask (N, H) bool, the rows
    each head trains on (None: every row, every head). c_values (G,): every C for every head;
    or (G, H): C value g of head h. Every head must see at least 2 classes.
    precise: solve in float64 to `PRECISE_TOLERANCE_GRAD` (None: when the features hold at most
    `FLOAT64_ELEMENTS` values), else in float32 to `TOLERANCE_GRAD`; `tolerance_grad` and
    `relative_decrease` override the chosen rule's. initial: a fit of the same problems to
    start from (e.g. the float32 fit of the chosen C values, polished here in float64).
    """
    import torch

    if precise is None:
        precise = features.numel() <= FLOAT64_ELEMENTS
    real = torch.float64 if precise else torch.float32
    if tolerance_grad is None:
        tolerance_grad = PRECISE_TOLERANCE_GRAD if precise else TOLERANCE_GRAD
    if relative_decrease is None:
        relative_decrease = 0.0 if precise else RELATIVE_DECREASE

    device = features.device
    n_rows, dim = features.shape
    n_heads = targets.shape[1]
    binary = n_classes == 2
    k_out = 1 if binary else n_classes
    mean, std = _moments(features, chunk_rows, real)
    inverse_std = 1.0 / std

    buffer = torch.empty(min(chunk_rows, n_rows), dim, dtype=real, device=device)

    def centred_chunks():
        """(first row, centred rows) chunk by chunk, into one reused buffer: a fresh tensor per
        chunk would cost a page fault per page on the CPU."""
        for start in range(0, n_rows, chunk_rows):
            chunk = features[start : start + chunk_rows]
            yield start, torch.sub(chunk, mean, out=buffer[: len(chunk)])

    # Per-head standardisation, relative to the global one: z_h = z * scale_h + shift_h.
    if mask is None:
        weight = torch.full((n_rows, n_heads), 1.0 / n_rows, dtype=real, device=device)
        scale = torch.ones(n_heads, dim, dtype=real, device=device)
        shift = torch.zeros(n_heads, dim, dtype=real, device=device)
    else:
        mask_float = mask.to(real)
        counts = mask_float.sum(0).double()
        sums = torch.zeros(dim, n_heads, dtype=torch.float64, device=device)
        squares = torch.zeros(dim, n_heads, dtype=torch.float64, device=device)
        for start, centred in centred_chunks():
            z = centred.mul_(inverse_std)
            rows = mask_float[start : start + len(z)]
            sums += (z.T @ rows).double()
            squares += ((z * z).T @ rows).double()
        head_mean = (sums / counts).T  # (H, D), in z units
        head_std = (squares / counts - (sums / counts) ** 2).clamp_min(0).sqrt().T
        constant = head_std * std.double() < CONSTANT_STD
        scale = torch.where(constant, 0.0, 1.0 / head_std.clamp_min(1e-30)).to(real)
        shift = (-head_mean * scale).to(real)
        weight = mask_float / counts.to(real)
    # Class frequencies per head: the starting intercepts and the curvature a.
    if binary:
        positive = (weight * (targets == 1).to(real)).sum(0).clamp(1e-6, 1 - 1e-6)  # (H,)
        start_bias = torch.log(positive / (1 - positive))[:, None]
        curvature = positive * (1 - positive)
        offset = torch.zeros(n_heads, 1, dtype=real, device=device)
    else:
        frequency = torch.zeros(n_heads, n_classes, dtype=real, device=device)
        for k in range(n_classes):
            frequency[:, k] = (weight * (targets == k).to(real)).sum(0)
        present = frequency > 0
        start_bias = torch.where(present, torch.log(frequency.clamp_min(1e-30)), 0.0)
        curvature = (frequency * (1 - frequency)).sum(1) / present.sum(1)
        offset = torch.where(present, 0.0, ABSENT_LOGIT)
    # Preconditioner basis from evenly spaced rows (it changes the path, never the minimum).
    sample = torch.linspace(0, n_rows - 1, min(n_rows, PRECONDITIONER_ROWS), device=device)
    z_sample = (features[sample.long()] - mean) * inverse_std
    covariance = (z_sample.T @ z_sample).double() / len(z_sample)
    eigenvalues, basis = torch.linalg.eigh(covariance)
    eigenvalues, basis = eigenvalues.clamp_min(0).to(real), basis.to(real)

    c_grid = np.asarray(c_values, dtype=np.float64)
    c_grid = np.broadcast_to(c_grid.reshape(len(c_grid), -1), (len(c_grid), n_heads))
    c_tensor = torch.as_tensor(c_grid.reshape(-1).copy(), dtype=real, device=device)  # C-major
    n_problems = len(c_tensor)
    head_of = torch.arange(n_problems, device=device) % n_heads
    rows_of_head = (weight > 0).sum(0).to(real)
    penalty = 1.0 / (c_tensor * rows_of_head[head_of])  # (P,)
    precondition = (curvature[head_of, None] * eigenvalues + penalty[:, None]).rsqrt()  # (P, D)
    intercept_scale = curvature[head_of].rsqrt()  # (P,)

    def parameters(flat: "torch.Tensor", problems: "torch.Tensor"):
        """W (A, D, K_out) in the head's standardised space and b (A, K_out), from β."""
        state = flat[problems].view(len(problems), dim + 1, k_out)
        coefficients = basis @ (precondition[problems, :, None] * state[:, :dim])
        return coefficients, intercept_scale[problems, None] * state[:, dim]

    def objective(flat: "torch.Tensor", moving: "torch.Tensor"):
        problems = moving.nonzero()[:, 0]
        n_active = len(problems)
        heads = head_of[problems]
        coefficients, intercept = parameters(flat, problems)
        # Logits of problem p on a chunk: centred @ (scale·W / std) + (shift·W + b).
        in_z = scale[heads, :, None] * coefficients
        raw = (in_z * inverse_std[None, :, None]).permute(1, 0, 2).reshape(dim, -1)
        bias = (shift[heads, :, None] * coefficients).sum(1) + intercept + offset[heads]
        loss = torch.zeros(n_active, dtype=torch.float64, device=device)
        grad_raw = torch.zeros(dim, n_active * k_out, dtype=torch.float64, device=device)
        grad_bias = torch.zeros(n_active, k_out, dtype=torch.float64, device=device)
        for start, centred in centred_chunks():
            logits = (centred @ raw).view(len(centred), n_active, k_out) + bias
            chunk_targets = targets[start : start + len(centred)][:, heads]
            chunk_weight = weight[start : start + len(centred)][:, heads]
            if binary:
                logit = logits[..., 0]
                sign = chunk_targets.to(real)
                losses = torch.nn.functional.softplus(logit) - sign * logit
                residual = (torch.sigmoid(logit) - sign)[..., None]
            else:
                # By hand: torch's (log_)softmax over a last axis of ~10 is ~10x slower on CPU.
                largest = logits.amax(2, keepdim=True)
                residual = (logits - largest).exp_()
                total = residual.sum(2, keepdim=True)
                residual /= total
                true_logit = logits.gather(2, chunk_targets[..., None])
                losses = (total.log_() + largest - true_logit)[..., 0]
                residual.scatter_add_(
                    2, chunk_targets[..., None], torch.full_like(residual[..., :1], -1.0)
                )
            loss += (losses * chunk_weight).sum(0).double()
            residual = residual * chunk_weight[..., None]
            grad_raw += (centred.T @ residual.view(len(centred), -1)).double()
            grad_bias += residual.sum(0).double()
        grad_z = (grad_raw.view(dim, n_active, k_out).permute(1, 0, 2) * inverse_std[:, None]).to(
            real
        )
        grad_coefficients = (
            scale[heads, :, None] * grad_z
            + shift[heads, :, None] * grad_bias[:, None, :].to(real)
            + penalty[problems, None, None] * coefficients
        )
        squared_norm = (coefficients.double() ** 2).sum((1, 2))
        values = torch.zeros(len(flat), dtype=torch.float64, device=device)
        values[problems] = loss + 0.5 * penalty[problems].double() * squared_norm
        grad_state = torch.cat(
            [
                precondition[problems, :, None] * (basis.T @ grad_coefficients),
                (intercept_scale[problems, None] * grad_bias.to(real))[:, None, :],
            ],
            dim=1,
        )
        gradients = torch.zeros_like(flat)
        gradients[problems] = grad_state.reshape(n_active, -1)
        sizes = torch.zeros(len(flat), dtype=real, device=device)
        sizes[problems] = torch.maximum(
            grad_coefficients.abs().amax((1, 2)), grad_bias.abs().amax(1).to(real)
        )
        return values, gradients, sizes

    start = torch.zeros(n_problems, dim + 1, k_out, dtype=real, device=device)
    if initial is None:
        start[:, dim] = start_bias[head_of] / intercept_scale[:, None]
    else:  # its weights and bias, back through the change of variables of `parameters`
        in_z = initial.weights.to(real) * (std / initial.std).to(real)[None, :, None]
        coefficients = torch.where(scale[head_of, :, None] > 0, in_z, 0.0) / torch.where(
            scale[head_of, :, None] > 0, scale[head_of, :, None], 1.0
        )
        intercept = (
            initial.bias.to(real)
            + (in_z * ((mean - initial.mean.to(real)) / std)[None, :, None]).sum(1)
            - (shift[head_of, :, None] * coefficients).sum(1)
            - offset[head_of]
        )
        start[:, :dim] = (basis.T @ coefficients) / precondition[:, :, None]
        start[:, dim] = intercept / intercept_scale[:, None]
    minimum = minimise(
        objective,
        start.view(n_problems, -1),
        max_iter=max_iter,
        tolerance_grad=tolerance_grad,
        relative_decrease=relative_decrease,
    )
    all_problems = torch.arange(n_problems, device=device)
    with torch.no_grad():
        coefficients, intercept = parameters(minimum.x, all_problems)
        heads = head_of
        weights = scale[heads, :, None] * coefficients
        bias = (shift[heads, :, None] * coefficients).sum(1) + intercept + offset[heads]
    return HeadFit(weights, bias, mean, std, binary, n_heads, minimum)


def mean_log_loss(
    fit: HeadFit,
    features: "torch.Tensor",
    targets: "torch.Tensor",
    mask: "torch.Tensor | None",
    *,
    floor: float,
    chunk_rows: int = CHUNK_ROWS,
) -> np.ndarray:
    """(P,) mean log-loss of each problem on the rows (M, D) its head is scored on.

    targets (M, H) int64; mask (M, H) bool (None: every row). Probabilities are clipped at
    `floor` before the log, as scikit-learn's log_loss does.
    """
    import torch

    n_problems = len(fit.weights)
    heads = torch.arange(n_problems, device=features.device) % fit.n_heads
    totals = torch.zeros(n_problems, dtype=torch.float64, device=features.device)
    counts = torch.zeros(n_problems, dtype=torch.float64, device=features.device)
    for start in range(0, len(features), chunk_rows):
        probabilities = fit.probabilities(
            features[start : start + chunk_rows], range(n_problems), chunk_rows=chunk_rows
        )
        chunk_targets = targets[start : start + chunk_rows][:, heads]
        picked = probabilities.gather(2, chunk_targets[..., None])[..., 0]
        losses = -torch.log(picked.clamp_min(floor)).double()
        rows = (
            torch.ones_like(losses)
            if mask is None
            else mask[start : start + chunk_rows][:, heads].double()
        )
        totals += (losses * rows).sum(0)
        counts += rows.sum(0)
    return (totals / counts).cpu().numpy()
