"""Pooling semantics of the real architectures, built offline (random weights, meta device where
a forward pass on real numbers is not needed)."""

import dataclasses

import pytest
import torch

from extract.models import build_backbone, resolve_model
from extract.models.backbone import pool_tokens
from extract.models.describe import check_model


def meta_dims(name: str) -> dict[str, int]:
    spec = resolve_model(name)
    with torch.device("meta"):
        backbone = build_backbone(spec, pretrained=False)
        side = spec.preprocessing.input_size
        return {p: v.shape[-1] for p, v in backbone(torch.zeros(1, 3, side, side)).items()}


@pytest.mark.parametrize(
    ("name", "dims"),
    [
        ("dinov2", {"cls": 1024, "mean": 1024}),
        ("dinov2-b", {"cls": 768, "mean": 768}),
        ("mae", {"mean": 768, "cls": 768}),
        ("aimv2", {"mean": 1024}),
        ("sam", {"mean": 256}),
        ("sam2", {"mean": 896}),
        ("resnet50", {"pooled": 2048}),
        ("deit-b", {"cls": 768, "mean": 768}),
    ],
)
def test_real_configurations_give_the_published_embedding_sizes(name, dims):
    assert meta_dims(name) == dims


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
