"""A frozen encoder that returns every requested pooling (and, asked for, its token grid) from a
single forward pass."""

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medprobe.extract.models.tokens import TOKENS, pooled_tokens, resolve_grid


def pool_tokens(tokens: torch.Tensor, *, num_prefix_tokens: int) -> dict[str, torch.Tensor]:
    """tokens: (B, N, D) after the final norm. 'cls' is token 0; 'mean' averages the patch tokens
    only (class and register tokens excluded, as MAE's and DINOv2's evaluations do)."""
    pooled = {"mean": tokens[:, num_prefix_tokens:].mean(dim=1)}
    if num_prefix_tokens > 0:
        pooled["cls"] = tokens[:, 0]
    return pooled


def pool_feature_map(
    features: torch.Tensor, *, channels_last: bool = False
) -> dict[str, torch.Tensor]:
    """features: (B, C, H, W), or (B, H, W, C) when `channels_last`; 'mean' is the spatial mean."""
    spatial_dims = (1, 2) if channels_last else (2, 3)
    return {"mean": features.mean(dim=spatial_dims)}


class Backbone(nn.Module):
    """Wraps an encoder and a function that maps a batch to {pooling: (B, D) tensor} (plus a
    `TokenGrid` under `TOKENS`, see `models.tokens`).

    `forward` returns exactly the poolings asked for, in float32, so every source looks the same
    to the extraction loop; with `token_side` = N set, also `TOKENS`: (B, T, D) float16, the
    token grid average-pooled to at most N x N positions after the prefix tokens.
    """

    token_side: int | None = None

    def __init__(
        self,
        encoder: nn.Module,
        pool: Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]],
        poolings: tuple[str, ...],
    ) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self._pool = pool
        self.poolings = poolings

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self._pool(self.encoder, images)
        tokens = outputs.pop(TOKENS, None)
        missing = [p for p in self.poolings if p not in outputs]
        if missing:
            raise ValueError(f"encoder offers poolings {sorted(outputs)}, not {missing}")
        result = {p: outputs[p].float() for p in self.poolings}
        if self.token_side is not None:
            if tokens is None:
                raise ValueError("this encoder offers no token grid")
            result[TOKENS] = pooled_tokens(resolve_grid(tokens), self.token_side)
        return result

    def _blank(self, input_size: int) -> torch.Tensor:
        return torch.zeros(1, 3, input_size, input_size, device=next(self.parameters()).device)

    @torch.inference_mode()
    def embed_dims(self, input_size: int) -> dict[str, int]:
        """Embedding size per pooling, found by one forward pass on a blank image."""
        outputs = self(self._blank(input_size))
        return {p: int(outputs[p].shape[-1]) for p in self.poolings}

    @torch.inference_mode()
    def token_layout(self, input_size: int, max_side: int) -> dict[str, Any]:
        """{'grid': [h, w], 'prefix_tokens': p, 'dim': D} of the tokens stored at `max_side`,
        found by one forward pass on a blank image (free on the meta device)."""
        tokens = self._pool(self.encoder, self._blank(input_size)).get(TOKENS)
        if tokens is None:
            raise ValueError("this encoder offers no token grid")
        tokens = resolve_grid(tokens)
        height, width = tokens.grid.shape[-2:]
        return {
            "grid": [min(int(height), max_side), min(int(width), max_side)],
            "prefix_tokens": int(tokens.prefix.shape[1]),
            "dim": int(tokens.grid.shape[1]),
        }
