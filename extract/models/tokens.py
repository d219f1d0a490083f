"""What a backbone offers beyond one pooled vector, from the same forward pass: its token grid
(patch tokens or a feature map, plus class/register tokens) and the outputs of its last blocks.

A source's pooling function returns a `TokenGrid` under `TOKENS` beside its poolings (or a
function that makes one, where reading it costs work, such as a norm); it costs nothing (views
of tensors the pass computed anyway) until `--tokens N` asks for it, when
`pooled_tokens` average-pools it on the device to at most N x N positions. Intermediate blocks
are read with forward hooks (`BlockTaps`), never with a second pass.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# The key of the token grid in a pooling function's outputs (never a pooling name).
TOKENS = "tokens"
# DINOv2's linear-evaluation feature (its `create_linear_input` with use_n_blocks=4 and
# avgpool): the class tokens of the last four blocks, each after the final norm, then the mean
# patch token of the last, concatenated: 5 x D.
MULTILAYER = "last4_cls_mean"
MULTILAYER_BLOCKS = 4


@dataclass(frozen=True)
class TokenGrid:
    """One batch's tokens: `prefix` (B, p, D) class/register tokens (p may be 0) and `grid`
    (B, D, H, W) patch positions or feature-map cells."""

    prefix: torch.Tensor
    grid: torch.Tensor


def grid_from_sequence(tokens: torch.Tensor, *, num_prefix_tokens: int) -> TokenGrid:
    """tokens (B, p + H*W, D) of a square input (H == W), patch tokens in row-major order."""
    n_patches = tokens.shape[1] - num_prefix_tokens
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise ValueError(f"{n_patches} patch tokens do not form a square grid")
    patches = tokens[:, num_prefix_tokens:]
    grid = patches.unflatten(1, (side, side)).permute(0, 3, 1, 2)
    return TokenGrid(prefix=tokens[:, :num_prefix_tokens], grid=grid)


def grid_from_map(features: torch.Tensor, *, channels_last: bool = False) -> TokenGrid:
    """features (B, C, H, W), or (B, H, W, C) when `channels_last`: no prefix tokens."""
    grid = features.permute(0, 3, 1, 2) if channels_last else features
    return TokenGrid(prefix=grid.new_zeros((grid.shape[0], 0, grid.shape[1])), grid=grid)


def resolve_grid(tokens: "TokenGrid | Callable[[], TokenGrid]") -> TokenGrid:
    """The grid a pooling function returned, made now where it returned how to make it."""
    return tokens if isinstance(tokens, TokenGrid) else tokens()


def pooled_tokens(tokens: TokenGrid, max_side: int) -> torch.Tensor:
    """(B, p + h*w, D) float16: the prefix tokens, then the grid average-pooled to
    h = min(H, max_side) by w = min(W, max_side) cells (adaptive pooling, as torch defines it:
    cell i covers rows floor(i*H/h) to ceil((i+1)*H/h)), row-major. Averaged in float32."""
    grid = tokens.grid.float()
    height, width = grid.shape[-2:]
    pooled = F.adaptive_avg_pool2d(grid, (min(height, max_side), min(width, max_side)))
    patches = pooled.flatten(2).transpose(1, 2)
    return torch.cat([tokens.prefix.float(), patches], dim=1).half()


class BlockTaps:
    """Forward hooks that keep the outputs of `blocks` during a forward pass (the first element
    where a block returns a tuple, as transformers' layers may); `take()` hands them over."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        self._outputs: list[torch.Tensor] = []
        self._handles = [block.register_forward_hook(self._keep) for block in blocks]

    def _keep(self, module: nn.Module, inputs: object, output: object) -> None:
        self._outputs.append(output[0] if isinstance(output, (tuple, list)) else output)

    def take(self) -> list[torch.Tensor]:
        outputs, self._outputs = self._outputs, []
        return outputs


def last_blocks_taps(blocks: Sequence[nn.Module] | None, owner: str) -> BlockTaps:
    """Taps on the last MULTILAYER_BLOCKS of `blocks`; refused for a model without them."""
    if blocks is None or len(blocks) < MULTILAYER_BLOCKS:
        raise ValueError(
            f"{owner}: pooling {MULTILAYER!r} needs a transformer with at least "
            f"{MULTILAYER_BLOCKS} blocks"
        )
    return BlockTaps(list(blocks)[-MULTILAYER_BLOCKS:])


def multilayer_feature(
    block_outputs: list[torch.Tensor],
    final_norm: Callable[[torch.Tensor], torch.Tensor],
    mean_patch_token: torch.Tensor,
) -> torch.Tensor:
    """(B, 5 D): the class token (token 0) of each of the last four `block_outputs` (B, N, D)
    after `final_norm`, then `mean_patch_token` (B, D) of the last block."""
    if len(block_outputs) != MULTILAYER_BLOCKS:
        raise ValueError(f"expected {MULTILAYER_BLOCKS} block outputs, got {len(block_outputs)}")
    class_tokens = [final_norm(output[:, :1])[:, 0] for output in block_outputs]
    return torch.cat([*class_tokens, mean_patch_token], dim=-1)
