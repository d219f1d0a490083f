"""A frozen encoder that returns every requested pooling from a single forward pass."""

from collections.abc import Callable

import torch
from torch import nn


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
    """Wraps an encoder and a function that maps a batch to {pooling: (B, D) tensor}.

    `forward` returns exactly the poolings asked for, in float32, so every source looks the same
    to the extraction loop.
    """

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
        missing = [p for p in self.poolings if p not in outputs]
        if missing:
            raise ValueError(f"encoder offers poolings {sorted(outputs)}, not {missing}")
        return {p: outputs[p].float() for p in self.poolings}

    @torch.inference_mode()
    def embed_dims(self, input_size: int) -> dict[str, int]:
        """Embedding size per pooling, found by one forward pass on a blank image."""
        probe = torch.zeros(1, 3, input_size, input_size, device=next(self.parameters()).device)
        return {p: int(v.shape[-1]) for p, v in self(probe).items()}
