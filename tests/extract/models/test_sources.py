"""Each loader's real checkpoint path, exercised on locally saved weights in the real format."""

import json
import re

import numpy as np
import pytest
import torch

from medprobe.cache import ToolkitError
from medprobe.extract.models import build_backbone, resolve_model


@pytest.fixture
def tiny_hf_vit(tmp_path):
    """A 1-layer ViT saved with save_pretrained, plus its image processor config."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    model = ViTModel(config)
    model.save_pretrained(tmp_path / "tiny-vit")
    (tmp_path / "tiny-vit" / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_resize": True,
                "size": {"height": 32, "width": 32},
                "resample": 2,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
            }
        )
    )
    return tmp_path / "tiny-vit", model


def test_hf_directory_loads_through_from_pretrained(tiny_hf_vit):
    directory, reference = tiny_hf_vit
    spec = resolve_model(f"hf:{directory}")
    assert spec.preprocessing.input_size == 32 and spec.preprocessing.interpolation == "bilinear"
    backbone = build_backbone(spec)
    images = torch.randn(2, 3, 32, 32)
    out = backbone(images)
    expected = reference.eval()(pixel_values=images).last_hidden_state
    torch.testing.assert_close(out["cls"], expected[:, 0])
    torch.testing.assert_close(out["mean"], expected[:, 1:].mean(1))


def test_hf_offline_without_cache_names_the_hub_id():
    with pytest.raises(ToolkitError, match="hf download org/not-cached"):
        resolve_model("hf:org/not-cached")


def test_timm_weights_file_goes_through_timms_pretrained_loader(tmp_path):
    import timm

    torch.manual_seed(1)
    source = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    backbone = build_backbone(resolve_model("timm:resnet10t.c3_in1k"), weights=path)
    source.reset_classifier(0)
    images = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(backbone(images)["pooled"], source.eval()(images))


def test_timm_pretrained_offline_names_the_hub_id():
    with pytest.raises(ToolkitError, match=r"timm/resnet10t\.c3_in1k"):
        build_backbone(resolve_model("timm:resnet10t.c3_in1k"), pretrained=True)


@pytest.mark.slow
def test_open_clip_weights_file_gives_the_pooled_embedding(tmp_path):
    import open_clip

    torch.manual_seed(2)
    source = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path / "vit_b32.pt"
    torch.save(source.state_dict(), path)
    spec = resolve_model("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert spec.preprocessing.input_size == 224
    backbone = build_backbone(spec, weights=path)
    images = torch.randn(1, 3, 224, 224)
    out = backbone(images)["pooled"]
    assert out.shape == (1, 512)
    np.testing.assert_allclose(
        out.detach().numpy(), source.eval().encode_image(images).detach().numpy(), atol=1e-4
    )


TINY_COCA = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16,
                   "attentional_pool": True, "attn_pooler_heads": 4, "output_tokens": True},
    "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 4, "layers": 1,
                 "embed_cls": True, "output_tokens": True},
    "multimodal_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 4,
                       "layers": 1, "attn_pooler_heads": 4},
    "custom_text": True,
}  # fmt: skip


def test_coca_keeps_only_its_image_tower_and_gives_encode_images_embedding(tmp_path):
    """CoCa's image tower returns (latent, tokens); the embedding is encode_image's latent."""
    import open_clip

    config = tmp_path / "coca_tiny_test.json"
    config.write_text(json.dumps(TINY_COCA))
    open_clip.add_model_config(config)
    torch.manual_seed(3)
    source = open_clip.create_model("coca_tiny_test", pretrained=None).eval()
    path = tmp_path / "coca.pt"
    torch.save(source.state_dict(), path)
    backbone = build_backbone(resolve_model("open_clip:coca_tiny_test/none"), weights=path)
    assert not hasattr(backbone.encoder, "text"), "only the image tower is kept"
    images = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(
            backbone(images)["pooled"], source.encode_image(images, normalize=False)
        )


@pytest.mark.parametrize(
    ("name", "repo"),
    [
        ("openclip", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"),
        ("biomedclip", "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"),
    ],
)
def test_open_clip_offline_names_the_hub_repo_to_fetch(name, repo):
    with pytest.raises(ToolkitError, match=rf"Offline\? Run `hf download {re.escape(repo)}`"):
        build_backbone(resolve_model(name), pretrained=True)
