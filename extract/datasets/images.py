"""Decoding image files, once, as cheaply as the target size allows."""

from pathlib import Path

from PIL import Image, ImageFile

from cache.errors import ToolkitError

# A truncated file must fail loudly, not decode as a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def open_image(path: Path, *, min_side: int | None = None) -> Image.Image:
    """Decode `path` fully. For JPEGs, when `min_side` is given, libjpeg's DCT scaling (PIL's
    `draft`) decodes at 1/2, 1/4 or 1/8 scale while the shorter side stays >= `min_side`."""
    if not path.is_file():
        raise ToolkitError(f"{path}: image file is missing")
    try:
        with Image.open(path) as image:
            if min_side is not None and image.format == "JPEG":
                scale = min(image.size) / min_side
                if scale >= 2:
                    image.draft(
                        image.mode, (image.size[0] // int(scale), image.size[1] // int(scale))
                    )
            image.load()
            return image.copy() if image.mode in ("L", "RGB") else _to_standard_mode(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ToolkitError(f"{path}: cannot decode image ({error})") from error


def _to_standard_mode(image: Image.Image) -> Image.Image:
    """16-bit grey is rescaled to 8-bit by its own range; palettes and alpha become RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        pixels = np.asarray(image, dtype=np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) / (high - low or 1.0) * 255.0
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    return image.convert("RGB")
