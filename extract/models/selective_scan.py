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

# Chunk length of the pure scan's first level (32 to 128 run alike; one long level is 1.7x slower).
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


def _inclusive_scan(decay: torch.Tensor, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = decay_t * h_{t-1} + inputs_t along the last dim from h_{-1} = 0, in log2(length)
    doubling steps (Hillis-Steele) over whole tensors instead of `length` sequential ones.

    In place: `decay` becomes decay_0 * ... * decay_t and `inputs` becomes h_t; both are
    returned. Only products of decays in (0, 1] are formed, so nothing overflows; they underflow
    to 0, which is the right limit."""
    state = inputs
    length, offset = decay.shape[-1], 1
    while offset < length:
        state[..., offset:] += decay[..., offset:] * state[..., :-offset]
        decay[..., offset:] = decay[..., offset:] * decay[..., :-offset]
        offset *= 2
    return decay, state


def selective_scan_torch(
    u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, *, chunk: int = CHUNK
) -> torch.Tensor:
    """The same recurrence as a two-level parallel scan, on any device, in float32.

    Positions are cut into chunks; a doubling scan runs inside every chunk at once (state from
    zero, plus the running decay), a second one over the chunks' last states gives the state
    entering each chunk, and h_t = local h_t + running decay_t * entering state. The work is
    log2(chunk) passes over (batch, channels, state, length) rather than a Python loop over
    positions; on CPU 17x faster than materialising each chunk's decay matrix."""
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    length = u.shape[-1]
    pad = -length % chunk  # a padded step decays by 1 and adds 0: it changes no real state
    decay = torch.exp(delta[:, :, None, :] * A[None, :, :, None])  # (b, d, n, L)
    inputs = (delta * u)[:, :, None, :] * B
    decay = F.pad(decay, (0, pad), value=1.0).unflatten(-1, (-1, chunk))
    inputs = F.pad(inputs, (0, pad)).unflatten(-1, (-1, chunk))
    running_decay, local = _inclusive_scan(decay, inputs)  # (b, d, n, chunks, chunk)
    _, chunk_ends = _inclusive_scan(  # (b, d, n, chunks)
        running_decay[..., -1].clone(), local[..., -1].clone()
    )
    entering = F.pad(chunk_ends[..., :-1], (1, 0))
    states = (local + running_decay * entering[..., None]).flatten(-2)[..., :length]
    y = (states * C).sum(2)
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
