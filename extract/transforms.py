"""From a decoded PIL image to the uint8 tensor a model's preprocessing asks for.

Only geometry happens here, on the loader's CPU workers; conversion to float and normalisation
(mean, std) happen on the device, per model, so models sharing a geometry share one decode.
"""

import numpy as np
import torch
from PIL import Image

from extract.models.spec import Preprocessing

INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def to_model_input(image: Image.Image, preprocessing: Preprocessing) -> torch.Tensor:
    """(C, input_size, input_size) uint8: resize (shorter side to resize_size, or the whole image
    to a square for crop='none'), centre-crop, and grey replicated to 3 channels if needed."""
    mode = "L" if preprocessing.channels == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    resample = INTERPOLATIONS[preprocessing.interpolation]
    side = preprocessing.input_size
    if preprocessing.crop == "none":
        image = image.resize((side, side), resample)
    else:
        width, height = image.size
        scale = preprocessing.resize_size / min(width, height)
        new_size = (max(side, round(width * scale)), max(side, round(height * scale)))
        image = image.resize(new_size, resample)
        left = (new_size[0] - side) // 2
        top = (new_size[1] - side) // 2
        image = image.crop((left, top, left + side, top + side))
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def normalise_on_device(
    images: torch.Tensor, preprocessing: Preprocessing, *, channels_last: bool
) -> torch.Tensor:
    """(B, C, H, W) uint8 on the device -> float32 normalised by the model's mean and std."""
    mean = torch.tensor(preprocessing.mean, device=images.device).view(1, -1, 1, 1) * 255.0
    std = torch.tensor(preprocessing.std, device=images.device).view(1, -1, 1, 1) * 255.0
    channels = images.shape[1]
    normalised = (images.float() - mean[:, :channels]) / std[:, :channels]
    if channels_last:
        normalised = normalised.contiguous(memory_format=torch.channels_last)
    return normalised
