"""The selective scan (Mamba's S6) that VMamba's SS2D runs, in pure PyTorch, with the CUDA kernel
used when one is installed.

Argument layout follows `selective_scan_fn` of mamba_ssm / VMamba's `selective_scan_cuda`:
    u, delta: (batch, channels, length); A: (channels, state);
    B, C: (batch, groups, state, length), channels split evenly over the groups;
    D: (channels,) skip; delta_bias: (channels,); returns y: (batch, channels, length).
Recurrence per channel d and state n:
    h_t = exp(delta_t A) * h_{t-1} + delta_t * B_t * u_t,   y_t = <h_t, C_t> + D u_t.
"""

import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# Chunk length of the pure scan: a (chunk x chunk) decay matrix per channel and state.
CHUNK = 64


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """float32 inputs, B and C broadcast from groups to channels: (batch, channels, state, L)."""
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    channels, groups = u.shape[1], B.shape[1]
    B = B.repeat_interleave(channels // groups, dim=1)
    C = C.repeat_interleave(channels // groups, dim=1)
    return u, delta, A, B, C


def selective_scan_reference(
    u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False
) -> torch.Tensor:
    """The recurrence as a plain loop over positions: slow, obviously right; for tests."""
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    outputs = []
    for t in range(u.shape[-1]):
        decay = torch.exp(delta[:, :, t, None] * A)
        state = decay * state + (delta[:, :, t] * u[:, :, t])[..., None] * B[..., t]
        outputs.append((state * C[..., t]).sum(-1))
    y = torch.stack(outputs, dim=-1)
    return y if D is None else y + D.float()[None, :, None] * u


def selective_scan_torch(
    u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, *, chunk: int = CHUNK
) -> torch.Tensor:
    """The same recurrence, chunk-parallel: within a chunk every h_t is a weighted sum with
    weights exp(S_t - S_s) (S the running sum of delta*A, so every exponent is <= 0 and nothing
    overflows); one state carries across chunks. Runs on any device, in float32."""
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, channels, length = u.shape
    state = u.new_zeros(batch, channels, A.shape[1])
    outputs = []
    for start in range(0, length, chunk):
        window = slice(start, min(start + chunk, length))
        delta_c = delta[:, :, window]  # (b, d, T)
        log_decay = torch.cumsum(delta_c[..., None] * A[None, :, None, :], dim=2)  # (b, d, T, n)
        steps = delta_c.shape[-1]
        causal = torch.ones(steps, steps, dtype=torch.bool, device=u.device).tril()
        exponent = log_decay[:, :, :, None, :] - log_decay[:, :, None, :, :]  # (b, d, t, s, n)
        weights = torch.exp(exponent.masked_fill(~causal[:, :, None], float("-inf")))
        inputs = (delta_c * u[:, :, window])[..., None] * B[:, :, :, window].transpose(2, 3)
        states = torch.einsum("bdtsn,bdsn->bdtn", weights, inputs)
        states = states + torch.exp(log_decay) * state[:, :, None, :]
        outputs.append((states * C[:, :, :, window].transpose(2, 3)).sum(-1))
        state = states[:, :, -1]
    y = torch.cat(outputs, dim=-1)
    return y if D is None else y + D.float()[None, :, None] * u


def cuda_selective_scan():
    """mamba_ssm's fused kernel (VMamba's `selective_scan_cuda` has the same interface), or None."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """The fused CUDA kernel when installed and the input is on a GPU; else the pure scan."""
    kernel = cuda_selective_scan() if u.is_cuda else None
    if kernel is not None:
        return kernel(
            u, delta, A, B, C, D, delta_bias=delta_bias, delta_softplus=delta_softplus
        ).float()
    return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus)
