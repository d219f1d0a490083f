"""SEEM's image backbone: X-Decoder's FocalNet with depthwise convolutions ("focal_dw").

Why not timm's FocalNet: SEEM's FocalNet-T (`seem_focalt_v0`, backbone NAME `focal_dw`) adds a
3x3 depthwise convolution with a residual before the modulation and before the MLP of every
block (`dw1`, `dw2`), uses overlapping convolutional patch embeddings (7x7/4 stem, 3x3/2
downsampling), post-norm blocks and one LayerNorm per output stage (`norm0`..`norm3`). timm's
FocalNet has no place for `dw1`/`dw2`, so no key mapping onto it can be strict. This module
mirrors SEEM's parameter names instead, so the mapping is only the removal of SEEM's prefix
(`backbone.` or `model.backbone.`) and of the non-backbone keys (see `seem_backbone_state_dict`).

Shapes: images (B, 3, H, W) float; `forward` returns the last stage after its norm,
(B, 8·embed_dim, H/32, W/32).
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


class FocalModulation(nn.Module):
    def __init__(self, dim: int, *, focal_level: int, focal_window: int, scaling: bool) -> None:
        super().__init__()
        self.focal_level = focal_level
        self.scaling = scaling
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1)
        self.h = nn.Conv2d(dim, dim, kernel_size=1)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        self.focal_layers = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(
                    dim,
                    dim,
                    2 * k + focal_window,
                    groups=dim,
                    padding=k + focal_window // 2,
                    bias=False,
                ),
                nn.GELU(),
            )
            for k in range(focal_level)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        channels = x.shape[-1]
        x = self.f(x).permute(0, 3, 1, 2)
        query, context, gates = torch.split(x, (channels, channels, self.focal_level + 1), 1)
        context_all = 0
        for level, layer in enumerate(self.focal_layers):
            context = layer(context)
            context_all = context_all + context * gates[:, level : level + 1]
        context_global = self.act(context.mean((2, 3), keepdim=True))
        context_all = context_all + context_global * gates[:, self.focal_level :]
        if self.scaling:
            context_all = context_all / (self.focal_level + 1)
        return self.proj((query * self.h(context_all)).permute(0, 2, 3, 1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class FocalBlock(nn.Module):
    """Post-norm block with layer scale (SEEM's USE_POSTLN and USE_LAYERSCALE are true)."""

    def __init__(self, dim: int, *, focal_level: int, focal_window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.dw1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = FocalModulation(
            dim, focal_level=focal_level, focal_window=focal_window, scaling=True
        )
        self.dw2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma_1 = nn.Parameter(torch.full((dim,), 1e-4))
        self.gamma_2 = nn.Parameter(torch.full((dim,), 1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        x = (x + self.dw1(x)).permute(0, 2, 3, 1)
        x = self.norm1(x + self.gamma_1 * self.modulation(x)).permute(0, 3, 1, 2)
        x = (x + self.dw2(x)).permute(0, 2, 3, 1)
        x = self.norm2(x + self.gamma_2 * self.mlp(x))
        return x.permute(0, 3, 1, 2)


class ConvEmbed(nn.Module):
    """Overlapping patch embedding (USE_CONV_EMBED): conv, then LayerNorm over channels."""

    def __init__(self, in_chans: int, dim: int, *, stem: bool) -> None:
        super().__init__()
        kernel, stride, padding = (7, 4, 3) if stem else (3, 2, 1)
        self.stride = stride
        self.proj = nn.Conv2d(in_chans, dim, kernel, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        # SEEM pads the bottom/right to a multiple of the patch size (4 for the stem, 2 after).
        x = F.pad(x, (0, -width % self.stride, 0, -height % self.stride))
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Stage(nn.Module):
    def __init__(self, dim: int, depth: int, *, downsample: bool, **block_args) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(FocalBlock(dim, **block_args) for _ in range(depth))
        self.downsample = ConvEmbed(dim, 2 * dim, stem=False) if downsample else None


class FocalNetDW(nn.Module):
    """SEEM's FocalNet; defaults are FocalNet-T as in `configs/seem/focalt_unicl_lang_v0.yaml`
    (embed 96, depths 2-2-6-2, focal levels 3, focal windows 3, MLP ratio 4)."""

    def __init__(
        self,
        *,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        focal_level: int = 3,
        focal_window: int = 3,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.num_features = [embed_dim * 2**i for i in range(len(depths))]
        self.patch_embed = ConvEmbed(3, embed_dim, stem=True)
        self.layers = nn.ModuleList(
            Stage(
                dim,
                depth,
                downsample=i < len(depths) - 1,
                focal_level=focal_level,
                focal_window=focal_window,
                mlp_ratio=mlp_ratio,
            )
            for i, (dim, depth) in enumerate(zip(self.num_features, depths, strict=True))
        )
        for i, dim in enumerate(self.num_features):  # SEEM's per-output norms, names kept
            self.add_module(f"norm{i}", nn.LayerNorm(dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        for stage in self.layers:
            for block in stage.blocks:
                x = block(x)
            last = x
            if stage.downsample is not None:
                x = stage.downsample(x)
        norm = getattr(self, f"norm{len(self.layers) - 1}")
        return norm(last.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


SEEM_PREFIXES = ("model.backbone.", "module.backbone.", "backbone.")


def seem_backbone_state_dict(checkpoint: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SEEM's whole-model state dict -> this module's: keep the `backbone.` keys, strip the prefix.

    The earlier-stage norms (`norm0`..`norm2`) are kept, so the load stays strict; they do not
    change the last-stage output we read.
    """
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        checkpoint = checkpoint["model"]
    mapped = {}
    for key, value in checkpoint.items():
        for prefix in SEEM_PREFIXES:
            if key.startswith(prefix):
                mapped[key.removeprefix(prefix)] = value
                break
    # A backbone-only state dict (keys already bare) is taken as it is.
    return mapped or dict(checkpoint)
