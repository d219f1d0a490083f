"""Token grids and DINOv2's multi-layer feature, on tiny random models of each family, against a
direct computation from the model's own modules."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from medprobe.extract.models import build_backbone, resolve_model
from medprobe.extract.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, Preprocessing
from medprobe.extract.models.tokens import TokenGrid, grid_from_map, pooled_tokens
from tests.extract.conftest import tiny_vit_spec
from tests.extract.models.test_sources import TINY_COCA


def adaptive_mean_reference(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(D, H, W) -> (out_h * out_w, D): cell (i, j) averages rows floor(i*H/h) .. ceil((i+1)*H/h)
    and the same for columns, written out with loops."""
    _, height, width = grid.shape
    cells = []
    for i in range(out_h):
        for j in range(out_w):
            rows = slice(i * height // out_h, -(-(i + 1) * height // out_h))
            cols = slice(j * width // out_w, -(-(j + 1) * width // out_w))
            cells.append(grid[:, rows, cols].mean(axis=(1, 2)))
    return np.stack(cells)


@pytest.mark.parametrize(("height", "width", "side"), [(4, 4, 2), (7, 5, 3), (3, 3, 8)])
def test_pooled_tokens_are_the_prefix_then_the_adaptive_mean_of_each_cell(height, width, side):
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randn(2, 1, 6, generator=generator)
    grid = torch.randn(2, 6, height, width, generator=generator)
    stored = pooled_tokens(TokenGrid(prefix=prefix, grid=grid), side)
    out_h, out_w = min(height, side), min(width, side)
    assert stored.dtype == torch.float16 and stored.shape == (2, 1 + out_h * out_w, 6)
    for image in range(2):
        expected = np.concatenate(
            [prefix[image].numpy(), adaptive_mean_reference(grid[image].numpy(), out_h, out_w)]
        )
        np.testing.assert_allclose(stored[image].float().numpy(), expected, atol=2e-3)


def test_a_channels_last_map_is_read_as_channels():
    features = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # B H W C
    tokens = grid_from_map(features, channels_last=True)
    assert tokens.prefix.shape == (2, 0, 5)
    torch.testing.assert_close(tokens.grid, features.permute(0, 3, 1, 2))


def _with_tokens(spec: ModelSpec, side: int, **build):
    backbone = build_backbone(spec, pretrained=False, **build)
    backbone.token_side = side
    return backbone


def _grid_tokens(sequence: torch.Tensor, prefix: int, side: int) -> torch.Tensor:
    """A (B, p + H*W, D) sequence as stored: prefix, then each side x side cell's mean
    (H divisible by side), by reshaping, not by pooling."""
    batch, n_tokens, dim = sequence.shape
    grid_side = int((n_tokens - prefix) ** 0.5)
    cell = grid_side // side
    patches = sequence[:, prefix:].reshape(batch, side, cell, side, cell, dim)
    return torch.cat([sequence[:, :prefix], patches.mean(dim=(2, 4)).flatten(1, 2)], dim=1)


def test_timm_vit_tokens_are_its_final_tokens_with_the_class_token_first():
    backbone = _with_tokens(tiny_vit_spec(), 2)  # 4 x 4 patches of 8 px -> 2 x 2 cells
    images = torch.randn(2, 3, 32, 32)
    out = backbone(images)
    expected = _grid_tokens(backbone.encoder.forward_features(images), prefix=1, side=2)
    torch.testing.assert_close(out["tokens"].float(), expected, atol=2e-3, rtol=2e-3)
    assert set(out) == {"cls", "mean", "tokens"}


# A 5-block DINOv2 with four registers, at 56 px: 4 x 4 patches of 14 px.
TINY_DINOV2_REG = {"img_size": 56, "depth": 5, "embed_dim": 32, "num_heads": 2}


def _tiny_dinov2(poolings=("cls", "mean", "last4_cls_mean")) -> ModelSpec:
    return dataclasses.replace(
        resolve_model("dinov2"),
        checkpoint="vit_small_patch14_reg4_dinov2",
        preprocessing=Preprocessing(56, 64, IMAGENET_MEAN, IMAGENET_STD),
        poolings=poolings,
        build_kwargs=TINY_DINOV2_REG,
    )


def _dinov2_block_outputs(encoder, images: torch.Tensor) -> list[torch.Tensor]:
    """Every block's output, by running timm's ViT steps by hand."""
    x = encoder.norm_pre(encoder.patch_drop(encoder._pos_embed(encoder.patch_embed(images))))
    outputs = []
    for block in encoder.blocks:
        x = block(x)
        outputs.append(x)
    return outputs


def test_dinov2_registers_are_prefix_tokens_and_last4_is_its_linear_eval_feature():
    backbone = _with_tokens(_tiny_dinov2(), 8)
    encoder = backbone.encoder
    assert encoder.num_prefix_tokens == 5  # CLS and four registers
    images = torch.randn(3, 3, 56, 56)
    out = backbone(images)
    blocks = _dinov2_block_outputs(encoder, images)
    last = encoder.norm(blocks[-1])
    # DINOv2's create_linear_input: last four CLS tokens (each normed), then the mean patch token.
    expected = torch.cat([encoder.norm(b)[:, 0] for b in blocks[-4:]] + [last[:, 5:].mean(1)], 1)
    assert out["last4_cls_mean"].shape == (3, 5 * 32)
    torch.testing.assert_close(out["last4_cls_mean"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["cls"], last[:, 0])
    torch.testing.assert_close(out["tokens"].float(), last, atol=3e-3, rtol=3e-3)  # 4x4 kept


def test_the_hooks_read_the_same_pass_and_do_not_accumulate():
    backbone = build_backbone(_tiny_dinov2(), pretrained=False)
    calls = []
    backbone.encoder.patch_embed.register_forward_hook(lambda *_: calls.append(1))
    images = torch.randn(2, 3, 56, 56)
    first = backbone(images)["last4_cls_mean"]
    second = backbone(images)["last4_cls_mean"]
    assert len(calls) == 2  # one forward pass per call
    torch.testing.assert_close(first, second)


def test_last4_is_refused_for_a_model_without_four_blocks():
    spec = dataclasses.replace(tiny_vit_spec(), poolings=("cls", "last4_cls_mean"))
    with pytest.raises(ValueError, match=r"last4_cls_mean.*at least 4 blocks"):
        build_backbone(spec, pretrained=False)


def test_timm_cnn_tokens_are_its_feature_map_and_average_to_its_pooling():
    spec = dataclasses.replace(tiny_vit_spec(), checkpoint="resnet10t", poolings=("pooled",))
    spec = dataclasses.replace(spec, build_kwargs={})
    backbone = _with_tokens(spec, 8)
    images = torch.randn(2, 3, 64, 64)
    out = backbone(images)
    features = backbone.encoder.forward_features(images)  # (2, 512, 2, 2)
    torch.testing.assert_close(
        out["tokens"].float(), features.flatten(2).transpose(1, 2), atol=2e-3, rtol=2e-3
    )
    torch.testing.assert_close(out["tokens"].float().mean(1), out["pooled"], atol=2e-3, rtol=2e-3)


def test_hf_dinov2_tokens_and_last4_from_its_hidden_states(tmp_path):
    """RAD-DINO's path: a transformers Dinov2Model, checked against `output_hidden_states`."""
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=5, num_attention_heads=2, intermediate_size=37,
        image_size=28, patch_size=7,
    )  # fmt: skip
    torch.manual_seed(0)
    Dinov2Model(config).save_pretrained(tmp_path / "tiny-dinov2")
    (tmp_path / "tiny-dinov2" / "preprocessor_config.json").write_text(
        json.dumps({"size": {"height": 28, "width": 28}, "do_center_crop": False})
    )
    spec = dataclasses.replace(
        resolve_model(f"hf:{tmp_path / 'tiny-dinov2'}"),
        poolings=("cls", "mean", "last4_cls_mean"),
    )
    backbone = _with_tokens(spec, 2)
    images = torch.randn(2, 3, 28, 28)
    out = backbone(images)
    with torch.inference_mode():
        reference = backbone.encoder(pixel_values=images, output_hidden_states=True)
    norm = backbone.encoder.layernorm
    last = reference.last_hidden_state
    expected = torch.cat(
        [norm(h)[:, 0] for h in reference.hidden_states[-4:]] + [last[:, 1:].mean(1)], 1
    )
    torch.testing.assert_close(out["last4_cls_mean"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        out["tokens"].float(), _grid_tokens(last, prefix=1, side=2), atol=2e-3, rtol=2e-3
    )


TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 4, "layers": 1},
}


@pytest.mark.parametrize(
    ("arch", "config", "normed"), [("clip", TINY_CLIP, True), ("coca", TINY_COCA, False)]
)
def test_open_clip_tokens_are_the_towers_transformer_output(tmp_path, arch, config, normed):
    """CLIP: the transformer's tokens through ln_post (what its own `tokens` output is, plus the
    class token); CoCa: the transformer's tokens, before the attentional pooler's queries."""
    import open_clip

    name = f"{arch}_tokens_test"
    (tmp_path / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    backbone = _with_tokens(resolve_model(f"open_clip:{name}/none"), 8)
    visual = backbone.encoder
    images = torch.randn(2, 3, 32, 32)
    out = backbone(images)
    with torch.inference_mode():
        sequence = visual.transformer(visual._embeds(images))
        expected = visual.ln_post(sequence) if normed else sequence
    assert out["tokens"].shape == (2, 1 + (32 // visual.patch_size[0]) ** 2, 32 if normed else 64)
    torch.testing.assert_close(out["tokens"].float(), expected, atol=3e-3, rtol=3e-3)


def test_vmamba_tokens_are_the_map_its_pooling_averages():
    from tests.extract.models.test_vmamba import tiny_spec

    backbone = _with_tokens(tiny_spec(), 8)
    images = torch.randn(1, 3, 64, 64)
    out = backbone(images)
    features = backbone.encoder.forward_features(images)
    torch.testing.assert_close(out["pooled"], backbone.encoder(images))
    torch.testing.assert_close(
        out["tokens"].float(), features.flatten(2).transpose(1, 2), atol=3e-3, rtol=3e-3
    )


def test_seem_tokens_are_its_last_stage():
    from tests.extract.models.test_seem import SMALL

    spec = dataclasses.replace(resolve_model("seem"), build_kwargs=SMALL)
    backbone = _with_tokens(spec, 1)
    images = torch.randn(2, 3, 64, 64)
    out = backbone(images)
    features = backbone.encoder(images)
    torch.testing.assert_close(
        out["tokens"].float()[:, 0], features.mean(dim=(2, 3)), atol=3e-3, rtol=3e-3
    )
    torch.testing.assert_close(out["tokens"].float()[:, 0], out["mean"], atol=3e-3, rtol=3e-3)
