"""Pooling semantics of the real architectures, built offline (random weights, meta device where
a forward pass on real numbers is not needed)."""

import dataclasses

import pytest
import torch

from medprobe.extract.models import build_backbone, default_registry, resolve_model
from medprobe.extract.models.backbone import pool_tokens
from medprobe.extract.models.describe import check_model


def meta_outputs(name: str, token_side: int | None = None) -> dict[str, tuple[int, ...]]:
    """Output shapes of `name`'s real architecture for one image, with the token grid when
    `token_side` is set (and its layout, as the plan computes it, under 'layout')."""
    spec = resolve_model(name)
    with torch.device("meta"):
        backbone = build_backbone(spec, pretrained=False)
        side = spec.preprocessing.input_size
        shapes = {}
        if token_side is not None:
            backbone.token_side = token_side
            shapes["layout"] = backbone.token_layout(side, token_side)
        outputs = backbone(torch.zeros(1, 3, side, side))
        return {**shapes, **{p: tuple(v.shape) for p, v in outputs.items()}}


# The smallest member of each family runs by default; the bigger ones (same code path, a
# second or two each even on the meta device) run with the slow tests.
LARGER_MEMBERS = {
    "dinov2",
    "dinov2-g",
    "mae-l",
    "mae-h",
    "aimv2-h",
    "sam-l",
    "sam-h",
    "sam-l-1024",
    "sam-h-1024",
    "sam2",
    "sam2-s",
    "sam2-l",
    "openclip-l",
    "coca-l",
    "vmamba-b",
}
# BiomedCLIP's architecture lives in its hub repo's open_clip_config.json: no offline build.
NEEDS_HUB_CONFIG = {"biomedclip"}


def _registry_params():
    for spec in default_registry().specs():
        if spec.name in NEEDS_HUB_CONFIG:
            continue
        marks = [pytest.mark.slow] if spec.name in LARGER_MEMBERS else []
        yield pytest.param(spec.name, id=spec.name, marks=marks)


# The token grid at --tokens 8 of one member per family: (grid, prefix tokens, token size).
TOKEN_LAYOUTS = {
    "efficientnet-lite0": ([7, 7], 0, 1280),  # 7 x 7 map, under 8 x 8: kept as it is
    "dinov2-s": ([8, 8], 1, 384),  # 16 x 16 patches pooled to 8 x 8, CLS first
    "aimv2": ([8, 8], 0, 1024),  # no class token
    "sam": ([8, 8], 0, 256),  # the 256-channel neck
    "sam2-t": ([7, 7], 0, 768),  # Hiera's last stage (channels last)
    "openclip": ([8, 8], 1, 768),  # the tower's width, before the projection to 512
    "coca": ([7, 7], 1, 768),  # ViT-B/32: the transformer's tokens, not the pooler's queries
    "blip": ([8, 8], 1, 768),
    "rad-dino": ([8, 8], 1, 768),
    "seem": ([7, 7], 0, 768),
    "vmamba-s": ([7, 7], 0, 768),
}


@pytest.mark.parametrize("name", list(_registry_params()))
def test_real_configurations_give_the_stated_embedding_size_and_a_token_grid(name):
    spec = resolve_model(name)
    shapes = meta_outputs(name, token_side=8)
    layout = shapes.pop("layout")
    tokens = shapes.pop("tokens")
    assert {p: s[-1] for p, s in shapes.items()} == {p: spec.pooling_dim(p) for p in spec.poolings}
    height, width = layout["grid"]
    assert height <= 8 and width <= 8
    assert tokens == (1, layout["prefix_tokens"] + height * width, layout["dim"])
    if name in TOKEN_LAYOUTS:
        assert (layout["grid"], layout["prefix_tokens"], layout["dim"]) == TOKEN_LAYOUTS[name]


@pytest.mark.parametrize(
    ("name", "dim"),
    [
        ("dinov2-s", 384),
        ("dinov2-g", 1536),
        ("mae-h", 1280),
        ("aimv2-h", 1536),
        ("sam-h", 256),
        ("sam-1024", 256),
        ("sam2-t", 768),
        ("sam2-l", 1152),
        ("openclip-l", 768),
        ("coca-l", 768),
        ("rad-dino", 768),
        ("blip", 768),
        ("vit-b", 768),
        ("vmamba-s", 768),
        ("vmamba-b", 1024),
    ],
)
def test_published_embedding_sizes(name, dim):
    """The sizes the papers report, independent of how the registry states them."""
    assert resolve_model(name).embed_dim == dim


def test_sam_at_1024_is_the_native_input_and_224_squashes():
    assert resolve_model("sam-1024").preprocessing.input_size == 1024
    assert dict(resolve_model("sam-1024").build_kwargs) == {}
    assert resolve_model("sam").build_kwargs["img_size"] == 224


def test_mean_excludes_prefix_tokens_and_cls_is_token_zero():
    tokens = torch.zeros(2, 5, 3)
    tokens[:, 0] = 100.0  # a class token that must not leak into the mean
    tokens[:, 1:] = torch.arange(4, dtype=torch.float32)[None, :, None]
    pooled = pool_tokens(tokens, num_prefix_tokens=1)
    assert torch.equal(pooled["cls"], torch.full((2, 3), 100.0))
    assert torch.allclose(pooled["mean"], torch.full((2, 3), 1.5))


def test_dinov2_cls_is_read_after_the_final_norm():
    """A LayerNorm output (identity affine, as at init) has zero mean and unit variance per
    token: the CLS we store must be such a vector, and equal to the normed token 0."""
    spec = dataclasses.replace(
        resolve_model("dinov2"),
        checkpoint="vit_small_patch14_dinov2",
        build_kwargs={"img_size": 70},
    )
    backbone = build_backbone(spec, pretrained=False)
    images = torch.randn(1, 3, 70, 70)
    cls = backbone(images)["cls"]
    assert torch.allclose(cls.mean(-1), torch.zeros(1), atol=1e-4)
    assert torch.allclose(cls.var(-1, unbiased=False), torch.ones(1), atol=1e-2)
    torch.testing.assert_close(cls, backbone.encoder.forward_features(images)[:, 0])


def test_check_model_builds_and_runs_offline():
    result = check_model("efficientnet-lite0")
    assert result["embedding dims"] == {"pooled": 1280} and result["check"] == "ok"
