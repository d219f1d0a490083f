"""Training the attentive models (`model`): AdamW with a cosine learning rate, every model of a
batch at once; its precision and threads; and scoring rows read in chunks.

AdamW (decoupled weight decay on queries and heads, not the bias) is written out so that each
model has its own weight decay. Adam is elementwise, so B models batched are B models trained
apart, to float rounding (tested).

Precision: training tokens are bfloat16 where the device multiplies it natively
(`compute_dtype`), float32 otherwise; the weights and Adam's moments are float32 (jepa's frozen
evaluation trains its attentive pooler under 16-bit autocast the same way). On an AVX-512 BF16
CPU the products run 3.6x float32's. `predict` scores in float32 on raw tokens.
"""

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medprobe.probe.fit.attentive.model import (
    AttentiveWeights,
    Workspace,
    gradients,
    logits,
    raw_weights,
    standardised_gradients,
)

if TYPE_CHECKING:
    import torch

BETAS = (0.9, 0.999)
EPSILON = 1e-8
# Multiply-adds per step below which one CPU thread is faster: on a few-shot step of a small store
# the threads' hand-offs (and, on a busy machine, their spinning) cost 10x the arithmetic.
SMALL_WORK = 1 << 24


def compute_dtype(device) -> "torch.dtype":
    """bfloat16 where `device` multiplies it natively (a CUDA device with bf16, a CPU with AVX-512
    BF16 or AMX tiles), else float32 (emulated bf16 is slower than float32). Deterministic per
    machine: every worker of a run on one machine trains in the same precision."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    native = [
        getattr(torch.cpu, name, None)
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    return (
        torch.bfloat16 if any(check is not None and check() for check in native) else torch.float32
    )


@contextmanager
def threads_for(work: int) -> Iterator[None]:
    """One torch thread while the work per step is below SMALL_WORK, then the count as it was."""
    import torch

    before = torch.get_num_threads()
    if work < SMALL_WORK and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Batch:
    """One optimisation step's rows: tokens (G, c, T, D) in the compute dtype and their positions
    (c,) in the groups' rows (None: every row, in order)."""

    tokens: "torch.Tensor"
    rows: "torch.Tensor | None"


def train(
    weights: AttentiveWeights,
    batches: Iterator[Batch],
    n_steps: int,
    *,
    targets: "torch.Tensor",
    entry_weights: "torch.Tensor",
    weight_decay: "torch.Tensor",
    learning_rate: float,
    mean: "torch.Tensor",
    std: "torch.Tensor",
    multilabel: bool,
) -> AttentiveWeights:
    """AdamW with a cosine schedule over n_steps batches, every model at once, in place.

    targets (G, n) int64 classes or (G, n, L) float 0/1 over the groups' rows; entry_weights
    (G, m, n) or (G, m, n, L): how much each row (and label) counts in each model's loss (0
    outside its fit rows or unknown);
    weight_decay (G, m). A model's loss on a batch is the weighted mean over the batch's rows, and
    the sum over models has each model's gradient as its own."""
    import torch

    parameters = weights.tensors()
    first = [torch.zeros_like(t) for t in parameters]
    second = [torch.zeros_like(t) for t in parameters]
    decays = [weight_decay[..., None, None], weight_decay[..., None, None, None], None]
    workspace = Workspace()
    for step, batch in zip(range(n_steps), batches, strict=False):
        rate = learning_rate * 0.5 * (1.0 + math.cos(math.pi * step / n_steps))
        rows = batch.rows
        batch_targets = targets if rows is None else targets[:, rows]
        batch_weights = entry_weights if rows is None else entry_weights[:, :, rows]
        raw = gradients(
            batch.tokens,
            raw_weights(weights, mean, std),
            batch_targets,
            batch_weights,
            multilabel,
            workspace,
        )
        correction1 = 1.0 - BETAS[0] ** (step + 1)
        correction2 = 1.0 - BETAS[1] ** (step + 1)
        for tensor, grad, m1, m2, decay in zip(
            parameters,
            standardised_gradients(raw, mean, std).tensors(),
            first,
            second,
            decays,
            strict=True,
        ):
            if decay is not None:
                tensor.mul_(1.0 - rate * decay)
            m1.mul_(BETAS[0]).add_(grad, alpha=1.0 - BETAS[0])
            m2.mul_(BETAS[1]).addcmul_(grad, grad, value=1.0 - BETAS[1])
            denominator = (m2 / correction2).sqrt_().add_(EPSILON)
            tensor.addcdiv_(m1, denominator, value=-rate / correction1)
    return weights


def repeated(batch: Batch) -> Iterator[Batch]:
    """Full-batch training: the same rows every step."""
    while True:
        yield batch


def predict(
    read: Callable[[np.ndarray], "torch.Tensor"],
    n_rows: int,
    weights: AttentiveWeights,
    *,
    chunk_rows: int,
    multilabel: bool,
) -> "torch.Tensor":
    """Scores of every model (its raw weights) on rows read in chunks: read(rows) -> (c, T, D);
    all G*m models see the same rows. Returns (G, m, n_rows, K) probabilities: softmax over
    classes, or each label's sigmoid."""
    import torch

    groups, n_models = weights.queries.shape[:2]
    flat = AttentiveWeights(
        *(t.reshape(1, groups * n_models, *t.shape[2:]) for t in weights.tensors())
    )
    pieces = []
    with torch.no_grad():
        for start in range(0, n_rows, chunk_rows):
            tokens = read(np.arange(start, min(n_rows, start + chunk_rows)))
            out = logits(tokens[None], flat)[0]
            pieces.append(out.sigmoid() if multilabel else out.softmax(2))
    return torch.cat(pieces, dim=1).view(groups, n_models, n_rows, -1)
