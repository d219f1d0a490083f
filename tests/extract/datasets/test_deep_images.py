"""Images deeper than 8 bits (float and 16/32-bit integer TIFFs and PNGs) become 8-bit grey by
their own range, never clipped to black; pixels no range can place are refused."""

import numpy as np
import pytest
from PIL import Image

from medprobe.cache import ToolkitError
from medprobe.extract.datasets.images import open_image


def by_range(values: np.ndarray) -> np.ndarray:
    """The rule written plainly: (v - min) / (max - min) * 255, rounded."""
    values = values.astype(np.float64)
    return np.round((values - values.min()) / (values.max() - values.min()) * 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("mode", "values"),
    [
        ("F", np.linspace(0.0, 1.0, 12 * 10, dtype=np.float32).reshape(12, 10)),  # a 0-1 float map
        ("F", np.linspace(-3e3, 1e3, 12 * 10, dtype=np.float32).reshape(12, 10)),  # CT-like
        ("I", np.arange(12 * 10, dtype=np.int32).reshape(12, 10) * 1000 - 7),
        ("I;16", np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500),
    ],
)
def test_deep_images_are_scaled_by_their_range(tmp_path, mode, values):
    path = tmp_path / "deep.tif"
    Image.fromarray(values).save(path)  # the mode follows the dtype
    with Image.open(path) as written:
        assert written.mode == mode  # PIL wrote what the test means to read
    image = open_image(path)
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), by_range(values))


def test_a_float_image_with_nan_is_refused_naming_the_file(tmp_path):
    values = np.ones((6, 6), dtype=np.float32)
    values[2, 3] = np.nan
    path = tmp_path / "masked.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(ToolkitError, match=r"masked\.tif: 1 of 36 pixels .* NaN or infinite"):
        open_image(path)
