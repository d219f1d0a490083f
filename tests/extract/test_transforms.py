"""Geometry on the CPU, normalisation on the device."""

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.extract.models.spec import HALF, Preprocessing
from medprobe.extract.transforms import normalise_on_device, to_model_input


def test_grey_is_replicated_to_three_channels_and_centre_cropped():
    grey = Image.fromarray(np.tile(np.arange(100, dtype=np.uint8), (50, 1)))  # 100 wide, 50 high
    out = to_model_input(grey, Preprocessing(32, 40, HALF, HALF))
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    # The shorter side went to 40 (width 80); the crop is the middle 32 columns, so the left
    # edge is not the image's darkest column.
    assert out[0, 0, 0] > 20


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest", "lanczos"])
@pytest.mark.parametrize("crop", ["center", "squash"])
def test_grey_resized_as_grey_gives_the_bytes_of_resizing_it_as_rgb(interpolation, crop):
    rng = np.random.default_rng(0)
    grey = Image.fromarray(rng.integers(0, 256, (61, 83), dtype=np.uint8))
    preprocessing = Preprocessing(32, 40, HALF, HALF, interpolation=interpolation, crop=crop)
    as_rgb = to_model_input(grey.convert("RGB"), preprocessing)
    assert torch.equal(to_model_input(grey, preprocessing), as_rgb)


def test_modes_other_than_grey_and_rgb_are_converted():
    palette = Image.new("P", (40, 40), 3)
    assert to_model_input(palette, Preprocessing(16, 16, HALF, HALF)).shape == (3, 16, 16)
    rgba = Image.new("RGBA", (40, 40), (10, 20, 30, 0))
    grey = to_model_input(rgba, Preprocessing(16, 16, HALF, HALF, channels=1))
    assert grey.shape == (1, 16, 16)


def test_squash_keeps_the_whole_image():
    image = Image.new("RGB", (100, 50), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 50))
    out = to_model_input(image, Preprocessing(20, 20, HALF, HALF, crop="squash"))
    assert out.shape == (3, 20, 20)
    assert out[2, 10, 0] > 200, "the blue left strip must survive a squash resize"


def test_normalisation_matches_the_float_formula():
    pixels = torch.tensor([[[[0, 255], [128, 64]]]], dtype=torch.uint8).repeat(1, 3, 1, 1)
    spec = Preprocessing(2, 2, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    out = normalise_on_device(pixels, spec, channels_last=False)
    expected = (pixels.float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(
        spec.std
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
