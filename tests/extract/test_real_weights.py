"""The bundled ImageNet EfficientNet-Lite0 weights: strict load, and a real photo classified."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from medprobe.cache import ToolkitError
from medprobe.extract.models import build_backbone, resolve_model
from medprobe.extract.models.sources.bundled_source import bundled_weights_path, map_lite0_keys
from medprobe.extract.transforms import normalise_on_device, to_model_input

EGYPTIAN_CAT, TABBY, TIGER_CAT = 285, 281, 282


@pytest.mark.real_weights
def test_bundled_lite0_loads_strictly_and_sees_a_cat():
    skimage_data = pytest.importorskip("skimage.data")
    spec = resolve_model("efficientnet-lite0")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state_dict = torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(map_lite0_keys(state_dict), strict=True)
    model.eval()
    pixels = to_model_input(Image.fromarray(skimage_data.chelsea()), spec.preprocessing)
    inputs = normalise_on_device(pixels[None], spec.preprocessing, channels_last=False)
    with torch.inference_mode():
        top3 = model(inputs).softmax(-1).topk(3).indices[0].tolist()
    assert top3[0] in (EGYPTIAN_CAT, TABBY, TIGER_CAT)


@pytest.mark.real_weights
def test_bundled_backbone_gives_1280_d_pooled_features_that_differ_by_image():
    spec = resolve_model("efficientnet-lite0")
    backbone = build_backbone(spec)
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.integers(0, 255, (2, 3, 224, 224), dtype=np.uint8))
    with torch.inference_mode():
        out = backbone(normalise_on_device(batch, spec.preprocessing, channels_last=False))
    assert out["pooled"].shape == (2, 1280)
    assert not torch.allclose(out["pooled"][0], out["pooled"][1])


@pytest.mark.real_weights
def test_a_checkpoint_missing_a_key_is_refused_naming_the_file(tmp_path):
    state_dict = torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)
    dropped = next(iter(state_dict))
    del state_dict[dropped]
    path = tmp_path / "lite0_partial.pth"
    torch.save(state_dict, path)
    with pytest.raises(
        ToolkitError, match=r"lite0_partial\.pth is not an EfficientNet-Lite0.*Missing"
    ):
        build_backbone(resolve_model("efficientnet-lite0"), weights=path)
