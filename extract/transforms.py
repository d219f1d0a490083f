"""From a decoded PIL image to the uint8 tensor a model's preprocessing asks for.

Only geometry happens here, on the loader's CPU workers; conversion to float and normalisation
(mean, std) happen on the device, per model, so models sharing a geometry share one decode.
"""

import functools

import numpy as np
import torch
from PIL import Image

from medprobe.extract.models.spec import Preprocessing

INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def resize_geometry(
    width: int, height: int, preprocessing: Preprocessing
) -> tuple[tuple[int, int], tuple[int, int]]:
    """((resized width, height), (crop left, top)) for an image of `width` x `height`.

    torchvision's arithmetic, to the pixel, because timm and open_clip evaluate through it:
    Resize(int) truncates the longer side (int(size * long / short)) and CenterCrop rounds its
    offset half to even (int(round(excess / 2))). One definition for the CPU and the GPU decoders,
    so both cut the same pixels."""
    target = preprocessing.resize_size
    if preprocessing.crop == "squash":
        resized = (target, target)
    elif width <= height:
        resized = (target, int(target * height / width))
    else:
        resized = (int(target * width / height), target)
    side = preprocessing.input_size
    # Python's round() halves to even, as CenterCrop's int(round(...)) does.
    return resized, (round((resized[0] - side) / 2.0), round((resized[1] - side) / 2.0))


def to_model_input(image: Image.Image, preprocessing: Preprocessing) -> torch.Tensor:
    """(C, input_size, input_size) uint8: resize (shorter side, or the whole image squashed, to
    resize_size; see `resize_geometry`), centre-crop, and grey replicated to 3 channels if needed.

    A grey image is resized as grey and replicated after the crop: the same bytes as converting
    to RGB first (resampling is per channel), at a third of the resize cost, which is most of a
    loader worker's time on X-rays and mammograms."""
    if preprocessing.channels == 1 and image.mode != "L":
        image = image.convert("L")
    elif preprocessing.channels == 3 and image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    side = preprocessing.input_size
    (width, height), (left, top) = resize_geometry(*image.size, preprocessing)
    image = image.resize((width, height), INTERPOLATIONS[preprocessing.interpolation])
    if (width, height) != (side, side):
        image = image.crop((left, top, left + side, top + side))
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        # Owned, writable and contiguous, like the copy below.
        return torch.from_numpy(np.repeat(pixels[None], preprocessing.channels, axis=0))
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())  # owned, writable, contiguous


def normalise_on_device(
    images: torch.Tensor, preprocessing: Preprocessing, *, channels_last: bool
) -> torch.Tensor:
    """(B, C, H, W) uint8 on the device -> float32 normalised by the model's mean and std."""
    mean, std = _mean_and_std(preprocessing.mean, preprocessing.std, images.device)
    channels = images.shape[1]
    normalised = (images.float() - mean[:, :channels]) / std[:, :channels]
    if channels_last:
        normalised = normalised.contiguous(memory_format=torch.channels_last)
    return normalised


@functools.cache
def _mean_and_std(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, 1, 1) float32 on `device`, scaled to uint8 range; made once per device because
    copying them there per batch is a blocking copy that waits for every kernel queued before
    it, which held each batch's launches until the previous forward pass had finished (ViT-B/14
    on an H100: 0.75 of its forward rate with that copy, 0.82 without)."""
    scaled = [torch.tensor(values).view(1, -1, 1, 1) * 255.0 for values in (mean, std)]
    return scaled[0].to(device), scaled[1].to(device)
