"""The attentive probe's model and its batched training, in torch: many independent models (every
seed, fold and weight decay of a budget) as one set of batched weights.

One model: M learned queries attend to an image's T frozen tokens (scores = token . query / sqrt(D),
a softmax over the tokens per query, no key projection: Efficient Probing, arXiv 2506.10178), each
query pools the tokens by its attention, and a linear head reads the M pooled vectors:

    logits = bias + sum_m heads[m]^T (sum_t softmax_t(x_t . q_m / sqrt(D)) x_t)

EP and apple/ml-aim's `AttentionPoolingClassifier` put a value projection between the pooling and
the linear head; with nothing non-linear between them a value projection followed by a linear head
is one linear map, so here each query has its own head (D, K) and there is no value projection.
Queries are drawn N(0, 0.02^2) as in EP, ml-aim and jepa's `AttentivePooler`; heads start the same,
the bias at 0. Tokens are standardised per feature on the model's own training rows (ml-aim's
affine-free BatchNorm over the tokens does the same): with unit-variance tokens and queries that
small the scores start near 0, so a fresh probe is mean pooling plus a linear head, and the
attention has to learn to be anything else. The standardisation is folded into the weights
(`raw_weights`), so raw tokens are never copied.

Training: AdamW (decoupled weight decay on queries and heads, not the bias) with a cosine learning
rate, written out so that each model has its own weight decay, on gradients written out too
(`gradients`, tested against autograd). Adam is elementwise, so B models batched are B models
trained apart, to float rounding (tested).
"""

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported inside functions: `import medprobe.probe` stays light
    import torch

N_QUERIES = 4
INIT_STD = 0.02  # EP's, ml-aim's and jepa's query init
BETAS = (0.9, 0.999)
EPSILON = 1e-8
MIN_STD = 1e-6  # a constant feature is left unscaled
# Multiply-adds per step below which one CPU thread is faster: on a few-shot step of a small store
# the threads' hand-offs (and, on a busy machine, their spinning) cost 10x the arithmetic.
SMALL_WORK = 1 << 24


@dataclass
class AttentiveWeights:
    """G groups x m models: queries (G, m, M, D), heads (G, m, M, D, K), bias (G, m, K), float32.
    A group is one set of rows (a support set, or the train split); its models differ by the rows
    they fit (folds) and their weight decay."""

    queries: "torch.Tensor"
    heads: "torch.Tensor"
    bias: "torch.Tensor"

    def tensors(self) -> list["torch.Tensor"]:
        return [self.queries, self.heads, self.bias]

    def select(self, models: "torch.Tensor") -> "AttentiveWeights":
        """One model per group: models (G,) int64 indices -> weights with m = 1."""
        groups = range(len(models))
        return AttentiveWeights(*(t[groups, models][:, None] for t in self.tensors()))


def initial_weights(
    rngs: list[np.random.Generator], n_models: int, dim: int, n_outputs: int, device
) -> AttentiveWeights:
    """Each group's draw from its own generator, shared by its n_models models (so the choice of
    weight decay compares models that started alike)."""
    import torch

    queries, heads = [], []
    for rng in rngs:
        queries.append(rng.normal(0.0, INIT_STD, (N_QUERIES, dim)))
        heads.append(rng.normal(0.0, INIT_STD, (N_QUERIES, dim, n_outputs)))

    def stacked(values: list[np.ndarray]) -> "torch.Tensor":
        tensor = torch.as_tensor(np.stack(values), dtype=torch.float32, device=device)
        return tensor[:, None].expand(-1, n_models, *tensor.shape[1:]).contiguous()

    bias = torch.zeros(len(rngs), n_models, n_outputs, device=device)
    return AttentiveWeights(stacked(queries), stacked(heads), bias)


def token_moments(
    sums: "torch.Tensor", squares: "torch.Tensor", n_rows: "torch.Tensor", n_tokens: int
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Per-feature mean and std of each model's tokens from sums over its fit rows: sums and
    squares (G, m, D) float64 (its tokens summed, and their squares), n_rows (G, m) -> mean, std
    (G, m, D) float32 (a constant feature gets std 1)."""
    count = n_rows.double().clamp_min(1.0)[..., None] * n_tokens
    mean = sums / count
    std = (squares / count - mean**2).clamp_min(0.0).sqrt()
    return mean.float(), std.where(std > MIN_STD, 1.0).float()


def raw_weights(
    weights: AttentiveWeights, mean: "torch.Tensor", std: "torch.Tensor"
) -> AttentiveWeights:
    """The same models on raw tokens: q/std (a query's constant shift by mean cancels in its
    softmax), heads/std, and bias - sum (mean/std) . heads (attention weights sum to 1)."""
    scale = 1.0 / std  # (G, m, D)
    heads = weights.heads * scale[:, :, None, :, None]
    shift = (mean * scale)[:, :, None, :, None] * weights.heads
    return AttentiveWeights(
        weights.queries * scale[:, :, None, :],
        heads,
        weights.bias - shift.sum((2, 3)),
    )


def attention(tokens: "torch.Tensor", queries: "torch.Tensor") -> "torch.Tensor":
    """tokens (G, n, T, D), queries (G, m, M, D) -> attention (G, n, T, m * M), a softmax over T.

    One product per group, (n*T, D) x (D, m*M): every model of a group reads the same tokens."""
    groups, n_rows, n_tokens, dim = tokens.shape
    flat_queries = (queries / math.sqrt(dim)).reshape(groups, -1, dim).transpose(1, 2)
    scores = tokens.reshape(groups, n_rows * n_tokens, dim) @ flat_queries
    return scores.view(groups, n_rows, n_tokens, -1).softmax(dim=2)


def pool(tokens: "torch.Tensor", attention_weights: "torch.Tensor") -> "torch.Tensor":
    """tokens (G, n, T, D), attention (G, n, T, m*M) -> pooled (G, n, m*M, D): per row, one
    (m*M, T) x (T, D) product."""
    groups, n_rows, n_tokens, dim = tokens.shape
    per_row = attention_weights.reshape(groups * n_rows, n_tokens, -1).transpose(1, 2)
    pooled = per_row @ tokens.reshape(groups * n_rows, n_tokens, dim)
    return pooled.view(groups, n_rows, -1, dim)


def read_heads(pooled: "torch.Tensor", weights: AttentiveWeights) -> "torch.Tensor":
    """pooled (G, n, m*M, D) -> logits (G, m, n, K): per group and model, the pooled vectors
    (n, M*D) by its heads (M*D, K), read where they lie (strided across the rows: a transposed
    copy of `pooled`, the largest tensor, cost more than the product)."""
    import torch

    groups, n_rows = pooled.shape[:2]
    n_models, n_queries, dim, n_outputs = weights.heads.shape[1:]
    by_model = pooled.view(groups, n_rows, n_models, n_queries * dim)
    heads = weights.heads.reshape(groups, n_models, n_queries * dim, n_outputs)
    # (K, n) per model, transposed after: MKL ran the (n, M*D) x (M*D, K) orientation 2x slower
    out = torch.stack(
        [heads[g].transpose(1, 2) @ by_model[g].permute(1, 2, 0) for g in range(groups)]
    )
    return out.transpose(2, 3) + weights.bias[:, :, None, :]


def logits(tokens: "torch.Tensor", weights: AttentiveWeights) -> "torch.Tensor":
    """tokens (G, n, T, D) float32 -> logits (G, m, n, K) of every model on every row of its group:
    `attention`, `pool`, `read_heads`."""
    return read_heads(pool(tokens, attention(tokens, weights.queries)), weights)


def gradients(
    tokens: "torch.Tensor",
    weights: AttentiveWeights,
    targets: "torch.Tensor",
    entry_weights: "torch.Tensor",
    multilabel: bool,
) -> AttentiveWeights:
    """The gradient of sum over models of each model's weighted mean loss (cross-entropy per row,
    or binary cross-entropy per row and label, x entry_weights over their total) with respect to
    the weights (raw, as `logits` takes them), written out: autograd copied the pooled vectors
    (the largest tensor, n*m*M*D) to and from the heads' layout and kept more intermediates.

    The four products: scores and pooling forward, then d(attention) = tokens . d(pooled) per
    row and d(queries) = d(scores)^T tokens per group; each n*T*D*m*M multiply-adds."""
    import torch

    groups, n_rows, n_tokens, dim = tokens.shape
    n_models, n_queries, _, n_outputs = weights.heads.shape[1:]
    attention_weights = attention(tokens, weights.queries)  # (G, n, T, m*M)
    pooled = pool(tokens, attention_weights)  # (G, n, m*M, D)
    out = read_heads(pooled, weights)  # (G, m, n, K)
    total = entry_weights.flatten(2).sum(2).clamp_min(1e-12)[:, :, None, None]
    if multilabel:
        d_out = (out.sigmoid() - targets[:, None]) * (entry_weights / total)
    else:
        d_out = out.softmax(3) - torch.nn.functional.one_hot(targets, n_outputs)[:, None]
        d_out *= entry_weights[..., None] / total
    by_model = pooled.view(groups, n_rows, n_models, n_queries * dim)
    heads = weights.heads.reshape(groups, n_models, n_queries * dim, n_outputs)
    # (K, M*D) per model, transposed after: MKL ran the (M*D, n) x (n, K) orientation 2.5x slower
    d_heads = torch.stack(
        [d_out[g].transpose(1, 2) @ by_model[g].transpose(0, 1) for g in range(groups)]
    ).transpose(2, 3)
    d_pooled = torch.empty_like(pooled).view(groups, n_rows, n_models, n_queries * dim)
    for g in range(groups):  # into `pool`'s layout for the per-row product below (a product
        # written straight into the strided layout ran 5x slower than this copy)
        d_pooled[g].copy_((d_out[g] @ heads[g].transpose(1, 2)).transpose(0, 1))
    rows = tokens.reshape(groups * n_rows, n_tokens, dim)
    d_attention = rows @ d_pooled.view(groups * n_rows, -1, dim).transpose(1, 2)  # (G*n, T, m*M)
    # softmax over T: d(scores) = a * (d(a) - sum_t a d(a))
    d_attention = d_attention.view_as(attention_weights).mul_(attention_weights)
    d_attention -= attention_weights * d_attention.sum(2, keepdim=True)
    d_queries = d_attention.view(groups, n_rows * n_tokens, -1).transpose(1, 2) @ tokens.reshape(
        groups, n_rows * n_tokens, dim
    )
    return AttentiveWeights(
        d_queries.view_as(weights.queries) / math.sqrt(dim),
        d_heads.view_as(weights.heads),
        d_out.sum(2),
    )


def standardised_gradients(
    raw: AttentiveWeights, mean: "torch.Tensor", std: "torch.Tensor"
) -> AttentiveWeights:
    """`raw_weights`' chain rule: gradients with respect to the raw weights -> with respect to the
    weights on standardised tokens (mean, std (G, m, D))."""
    scale = 1.0 / std
    shift = (mean * scale)[:, :, None, :, None] * raw.bias[:, :, None, None, :]
    return AttentiveWeights(
        raw.queries * scale[:, :, None, :],
        raw.heads * scale[:, :, None, :, None] - shift,
        raw.bias,
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
    """One optimisation step's rows: tokens (G, c, T, D) float32 and their positions (c,) in the
    groups' rows (None: every row, in order)."""

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
    for step, batch in zip(range(n_steps), batches, strict=False):
        rate = learning_rate * 0.5 * (1.0 + math.cos(math.pi * step / n_steps))
        rows = batch.rows
        batch_targets = targets if rows is None else targets[:, rows]
        batch_weights = entry_weights if rows is None else entry_weights[:, :, rows]
        raw = gradients(
            batch.tokens, raw_weights(weights, mean, std), batch_targets, batch_weights, multilabel
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
