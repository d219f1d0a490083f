"""SEEM's FocalNet-T backbone: the checkpoint's key format loads strictly, and what we read."""

import dataclasses

import pytest
import torch

from medprobe.cache import ToolkitError
from medprobe.extract.models import build_backbone, resolve_model
from medprobe.extract.models.focal_dw import FocalNetDW, seem_backbone_state_dict

SMALL = {"embed_dim": 8, "depths": (1, 1, 1, 1)}


def small_seem_spec():
    return dataclasses.replace(resolve_model("seem"), build_kwargs=SMALL)


def seem_format_checkpoint(model: FocalNetDW) -> dict[str, torch.Tensor]:
    """A whole-SEEM state dict as its checkpoints hold it: backbone keys under `backbone.`,
    beside the pixel decoder's and the language encoder's."""
    checkpoint = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    checkpoint["sem_seg_head.pixel_decoder.mask_features.weight"] = torch.zeros(4, 4)
    checkpoint["sem_seg_head.predictor.lang_encoder.logit_scale"] = torch.zeros(())
    return checkpoint


def test_the_real_configuration_has_seems_key_names_and_768_dims():
    names = FocalNetDW().state_dict().keys()
    for key in (
        "patch_embed.proj.weight",  # 7x7/4 conv stem
        "layers.0.blocks.0.dw1.weight",
        "layers.0.blocks.0.modulation.focal_layers.2.0.weight",
        "layers.0.blocks.0.gamma_1",
        "layers.2.downsample.proj.weight",
        "norm3.weight",
    ):
        assert key in names
    assert FocalNetDW().patch_embed.proj.kernel_size == (7, 7)
    assert FocalNetDW().num_features[-1] == resolve_model("seem").embed_dim == 768


def test_seem_checkpoint_loads_strictly_and_gives_the_last_stage_mean(tmp_path):
    torch.manual_seed(0)
    reference = FocalNetDW(**SMALL).eval()
    path = tmp_path / "seem_focalt_v0.pt"
    torch.save(seem_format_checkpoint(reference), path)
    backbone = build_backbone(small_seem_spec(), weights=path)
    images = torch.randn(2, 3, 64, 64)
    out = backbone(images)["mean"]
    assert out.shape == (2, 64)
    torch.testing.assert_close(out, reference(images).mean((2, 3)))


def test_mapping_accepts_model_prefix_and_bare_backbone_keys():
    state = FocalNetDW(**SMALL).state_dict()
    wrapped = {"model": {f"model.backbone.{k}": v for k, v in state.items()}}
    assert seem_backbone_state_dict(wrapped).keys() == state.keys()
    assert seem_backbone_state_dict(state).keys() == state.keys()


def test_a_checkpoint_of_another_shape_is_refused_with_the_path(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"backbone.patch_embed.proj.weight": torch.zeros(1)}, path)
    with pytest.raises(ToolkitError, match="not a SEEM FocalNet-T checkpoint"):
        build_backbone(small_seem_spec(), weights=path)


def test_offline_without_the_checkpoint_names_the_hub_file():
    with pytest.raises(ToolkitError, match=r"hf download xdecoder/SEEM seem_focalt_v0\.pt"):
        build_backbone(small_seem_spec(), pretrained=True)
