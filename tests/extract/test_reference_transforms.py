"""The pixels a model sees are its own library's eval transform, to the byte (to float rounding
after normalisation): torchvision's Resize + CenterCrop, timm's and open_clip's transforms."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from medprobe.cache import ToolkitError
from medprobe.extract.models.sources.open_clip_source import open_clip_preprocessing
from medprobe.extract.models.sources.timm_source import timm_preprocessing
from medprobe.extract.models.spec import HALF, Preprocessing
from medprobe.extract.transforms import normalise_on_device, to_model_input

MODES = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}
# Sizes whose resized long side truncates (not rounds) and whose crop excess is odd, both ways.
SIZES = [(390, 320), (320, 390), (1000, 777), (333, 333), (97, 61), (2416, 1736), (225, 1203)]


def photo(width: int, height: int, mode: str, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


def as_chw(image: Image.Image, channels: int = 3) -> torch.Tensor:
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], channels, axis=2)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("interpolation", sorted(MODES))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_centre_crop_is_torchvisions_resize_and_centre_crop(size, interpolation, mode):
    image = photo(*size, mode)
    for side, resize in ((224, 256), (224, 248), (37, 41), (224, 224)):
        p = Preprocessing(side, resize, HALF, HALF, interpolation=interpolation)
        reference = T.Compose([T.Resize(resize, MODES[interpolation]), T.CenterCrop(side)])
        assert torch.equal(to_model_input(image, p), as_chw(reference(image))), (side, resize)


@pytest.mark.parametrize("size", SIZES)
def test_squash_is_resize_to_a_square_then_centre_crop(size):
    image = photo(*size, "RGB")
    for side, resize in ((224, 224), (224, 248), (30, 33)):
        p = Preprocessing(side, resize, HALF, HALF, crop="squash")
        reference = T.Compose([T.Resize((resize, resize), MODES["bicubic"]), T.CenterCrop(side)])
        assert torch.equal(to_model_input(image, p), as_chw(reference(image))), (side, resize)


def reference_matches(preprocessing: Preprocessing, reference, image: Image.Image) -> None:
    ours = normalise_on_device(
        to_model_input(image, preprocessing)[None], preprocessing, channels_last=False
    )[0]
    # One grey level is 1/255/std >= 0.015 after normalisation; float rounding is ~1e-6.
    torch.testing.assert_close(ours, reference(image), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "checkpoint, expected",
    [
        # crop_pct 0.9: timm floors 224 / 0.9 to 248.
        ("vit_base_patch16_224.augreg2_in21k_ft_in1k", (224, 248, "bicubic", "center")),
        # crop_pct 1.0 in the default centre mode: shorter side to 224, then the crop.
        ("aimv2_large_patch14_224.apple_pt", (224, 224, "bicubic", "center")),
        # squash to floor(192 / 0.9), then the centre crop.
        ("dm_nfnet_f0.dm_in1k", (192, 213, "bicubic", "squash")),
        ("resnet50.tv_in1k", (224, 256, "bilinear", "center")),
    ],
)
def test_timm_models_see_timms_own_eval_transform(checkpoint, expected):
    import timm

    p = timm_preprocessing(checkpoint)
    assert (p.input_size, p.resize_size, p.interpolation, p.crop) == expected
    config = timm.data.resolve_data_config(
        {}, pretrained_cfg=timm.models.get_pretrained_cfg(checkpoint).to_dict()
    )
    reference = timm.data.create_transform(**config, is_training=False)
    for size in SIZES[:4]:
        reference_matches(p, reference, photo(*size, "RGB"))


def test_timm_transforms_that_pad_are_refused_not_approximated():
    with pytest.raises(ToolkitError, match="crop_mode='border'"):
        timm_preprocessing("deepseek_vit_412m.deepseek_v4_1_flash")
    with pytest.raises(ToolkitError, match="pads"):
        timm_preprocessing("volo_d4_448.sail_in1k")


@pytest.mark.parametrize(
    "arch, tag, crop",
    [("ViT-B-16", "laion2b_s34b_b88k", "center"), ("ViT-B-16-SigLIP", "webli", "squash")],
)
def test_open_clip_models_see_open_clips_own_eval_transform(arch, tag, crop):
    import open_clip

    p = open_clip_preprocessing(arch, tag)
    assert p.crop == crop
    config = open_clip.get_pretrained_cfg(arch, tag)
    reference = open_clip.image_transform(
        p.input_size,
        is_train=False,
        mean=config.get("mean"),
        std=config.get("std"),
        interpolation=config.get("interpolation"),
        resize_mode=config.get("resize_mode"),
    )
    for size in SIZES[:4]:
        reference_matches(p, reference, photo(*size, "RGB"))
