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

The gradients of the summed loss are written out (`gradients`, tested against autograd); the
training loop that applies them is `training`.

Precision: the four large products of a step take their operands in the tokens' dtype, and
everything else (softmaxes, logits, the gradients returned) is in the weights' dtype, float32,
as under torch's autocast. Tokens in bfloat16 are standardised per group first (`standardised`)
so that 8 bits of mantissa are spent on what varies, not on a large mean; each model's own
standardisation on top of that is the small `relative_moments`.
"""

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported inside functions: `import medprobe.probe` stays light
    import torch

N_QUERIES = 4
INIT_STD = 0.02  # EP's, ml-aim's and jepa's query init
MIN_STD = 1e-6  # a constant feature is left unscaled


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


def standardised(
    tokens: "torch.Tensor", mean: "torch.Tensor", std: "torch.Tensor", dtype: "torch.dtype"
) -> "torch.Tensor":
    """tokens (G, n, T, D) float32, mean and std (G, D) of each group's rows -> (tokens - mean) /
    std in `dtype` (float32: in place, no copy)."""
    tokens = tokens.sub_(mean[:, None, None]).div_(std[:, None, None])
    return tokens.to(dtype)


def relative_moments(
    mean: "torch.Tensor", std: "torch.Tensor", group_mean: "torch.Tensor", group_std: "torch.Tensor"
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Each model's standardisation (mean, std (G, m, D) of its fit rows) on tokens already
    standardised by their group's (G, D): (x - mean) / std = (z - (mean - group_mean) /
    group_std) / (std / group_std) with z = (x - group_mean) / group_std."""
    return (
        (mean - group_mean[:, None]) / group_std[:, None],
        std / group_std[:, None],
    )


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
    """tokens (G, n, T, D), queries (G, m, M, D) -> attention (G, n, T, m * M), a softmax over T
    in the queries' dtype.

    One product per group, (n*T, D) x (D, m*M) in the tokens' dtype: every model of a group reads
    the same tokens."""
    groups, n_rows, n_tokens, dim = tokens.shape
    flat_queries = (queries / math.sqrt(dim)).reshape(groups, -1, dim).transpose(1, 2)
    scores = tokens.reshape(groups, n_rows * n_tokens, dim) @ flat_queries.to(tokens.dtype)
    return scores.view(groups, n_rows, n_tokens, -1).to(queries.dtype).softmax(dim=2)


def pool(
    tokens: "torch.Tensor", attention_weights: "torch.Tensor", out: "torch.Tensor | None" = None
) -> "torch.Tensor":
    """tokens (G, n, T, D), attention (G, n, T, m*M) -> pooled (G, n, m*M, D) in the tokens'
    dtype (into `out` when given, contiguous): per row, one (m*M, T) x (T, D) product."""
    import torch

    groups, n_rows, n_tokens, dim = tokens.shape
    per_row = attention_weights.reshape(groups * n_rows, n_tokens, -1).transpose(1, 2)
    rows = tokens.reshape(groups * n_rows, n_tokens, dim)
    if out is None:
        return (per_row.to(tokens.dtype) @ rows).view(groups, n_rows, -1, dim)
    torch.bmm(per_row.to(tokens.dtype), rows, out=out.view(groups * n_rows, -1, dim))
    return out


def read_heads(pooled: "torch.Tensor", weights: AttentiveWeights) -> "torch.Tensor":
    """pooled (G, n, m*M, D) -> logits (G, m, n, K) in the weights' dtype: per group and model,
    the pooled vectors (n, M*D) by its heads (M*D, K), read where they lie (strided across the
    rows: a transposed copy of `pooled`, the largest tensor, cost more than the products)."""
    import torch

    groups, n_rows = pooled.shape[:2]
    n_models, n_queries, dim, n_outputs = weights.heads.shape[1:]
    by_model = pooled.view(groups, n_rows, n_models, n_queries * dim)
    heads = weights.heads.reshape(groups, n_models, n_queries * dim, n_outputs).to(pooled.dtype)
    out = torch.stack(
        [
            torch.stack([by_model[g, :, j] @ heads[g, j] for j in range(n_models)])
            for g in range(groups)
        ]
    )
    return out.to(weights.bias.dtype) + weights.bias[:, :, None, :]


def logits(tokens: "torch.Tensor", weights: AttentiveWeights) -> "torch.Tensor":
    """tokens (G, n, T, D) float32 -> logits (G, m, n, K) of every model on every row of its group:
    `attention`, `pool`, `read_heads`."""
    return read_heads(pool(tokens, attention(tokens, weights.queries)), weights)


class Workspace:
    """Buffers kept across a training's steps. The pooled vectors and their gradient are the
    largest tensors of a step (100 MB each at a 25-shot ISIC batch); allocated afresh, each step's
    came as new pages from the OS, and their page faults took a third of the step."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], like: "torch.Tensor") -> "torch.Tensor":
        """A contiguous (shape) tensor of like's dtype and device, its values undefined."""
        import torch

        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size or buffer.dtype != like.dtype:
            buffer = self._buffers[name] = torch.empty(size, dtype=like.dtype, device=like.device)
        return buffer[:size].view(shape)


def gradients(
    tokens: "torch.Tensor",
    weights: AttentiveWeights,
    targets: "torch.Tensor",
    entry_weights: "torch.Tensor",
    multilabel: bool,
    workspace: Workspace | None = None,
) -> AttentiveWeights:
    """The gradient of sum over models of each model's weighted mean loss (cross-entropy per row,
    or binary cross-entropy per row and label, x entry_weights over their total) with respect to
    the weights (raw, as `logits` takes them), written out: autograd copied the pooled vectors
    (the largest tensor, n*m*M*D) to and from the heads' layout and kept more intermediates.

    The four products, in the tokens' dtype: scores and pooling forward, then d(attention) =
    tokens . d(pooled) per row and d(queries) = d(scores)^T tokens per group; each n*T*D*m*M
    multiply-adds. Everything else, and the gradients returned, in the weights' dtype."""
    import torch

    groups, n_rows, n_tokens, dim = tokens.shape
    n_models, n_queries, _, n_outputs = weights.heads.shape[1:]
    compute = tokens.dtype
    workspace = workspace or Workspace()
    attention_weights = attention(tokens, weights.queries)  # (G, n, T, m*M)
    shape = (groups, n_rows, n_models * n_queries, dim)
    pooled = pool(tokens, attention_weights, workspace.take("pooled", shape, tokens))
    out = read_heads(pooled, weights)  # (G, m, n, K)
    total = entry_weights.flatten(2).sum(2).clamp_min(1e-12)[:, :, None, None]
    if multilabel:
        d_out = (out.sigmoid() - targets[:, None]) * (entry_weights / total)
    else:
        d_out = out.softmax(3) - torch.nn.functional.one_hot(targets, n_outputs)[:, None]
        d_out *= entry_weights[..., None] / total
    by_model = pooled.view(groups, n_rows, n_models, n_queries * dim)
    heads = weights.heads.reshape(groups, n_models, n_queries * dim, n_outputs).to(compute)
    d_scaled = d_out.to(compute)
    d_heads = torch.empty_like(weights.heads).view_as(heads)
    d_pooled = workspace.take("d_pooled", by_model.shape, tokens)
    by_rows = workspace.take("d_pooled_by_model", (n_models, n_rows, n_queries * dim), tokens)
    for g in range(groups):
        for j in range(n_models):  # one model at a time: a batched product of strided operands
            # is copied to contiguous ones first, in bfloat16. (K, M*D), transposed: MKL ran the
            # (M*D, n) x (n, K) orientation 2.5x slower
            d_heads[g, j] = (d_scaled[g, j].transpose(0, 1) @ by_model[g, :, j]).transpose(0, 1)
        # into `pool`'s layout for the per-row product below: one product, then one copy
        torch.bmm(d_scaled[g], heads[g].transpose(1, 2), out=by_rows)
        d_pooled[g].copy_(by_rows.transpose(0, 1))
    rows = tokens.reshape(groups * n_rows, n_tokens, dim)
    d_attention = rows @ d_pooled.view(groups * n_rows, -1, dim).transpose(1, 2)  # (G*n, T, m*M)
    # softmax over T: d(scores) = a * (d(a) - sum_t a d(a))
    d_attention = d_attention.view_as(attention_weights).to(out.dtype).mul_(attention_weights)
    d_attention -= attention_weights * d_attention.sum(2, keepdim=True)
    d_queries = d_attention.to(compute).view(groups, n_rows * n_tokens, -1).transpose(
        1, 2
    ) @ tokens.reshape(groups, n_rows * n_tokens, dim)
    return AttentiveWeights(
        d_queries.view_as(weights.queries).to(out.dtype) / math.sqrt(dim),
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
