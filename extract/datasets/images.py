"""Decoding image files, once, as cheaply as the target size allows."""

import logging
from pathlib import Path

from PIL import Image, ImageFile

from medprobe.cache.errors import ToolkitError

logger = logging.getLogger(__name__)

# A truncated file must fail loudly, not decode as a half-grey image.
ImageFile.LOAD_TRUNCATED_IMAGES = False


# Without a stored VOI window, DICOM values are windowed to these percentiles.
DICOM_PERCENTILE_WINDOW = (0.5, 99.5)
# "stored": the file's VOI window when it has one, else the percentile window; "percentile":
# always the percentile window (mammograms whose stored window suits a viewer, not a model).
DICOM_WINDOWS = ("stored", "percentile")


def read_dicom(path: Path, *, window: str = "stored") -> Image.Image:
    """A DICOM image as 8-bit: modality LUT, then the stored VOI window (WindowCenter/Width or
    a VOI LUT) when there is one and `window="stored"`, else the 0.5-99.5 percentile window;
    MONOCHROME1 inverted so that dense tissue is bright, as in MONOCHROME2."""
    import numpy as np
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array
    if getattr(dataset, "SamplesPerPixel", 1) == 3:
        return Image.fromarray(pixels.astype(np.uint8), mode="RGB")
    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    has_stored = "WindowCenter" in dataset or "VOILUTSequence" in dataset
    if window == "stored" and has_stored:
        values = apply_voi_lut(values, dataset).astype(np.float64)
        low, high = float(values.min()), float(values.max())
    else:
        low, high = np.percentile(values, DICOM_PERCENTILE_WINDOW)
    scaled = np.clip((values - low) / ((high - low) or 1.0), 0.0, 1.0) * 255.0
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        scaled = 255.0 - scaled
    return Image.fromarray(scaled.round().astype(np.uint8), mode="L")


def open_image(
    path: Path, *, min_side: int | None = None, dicom_window: str = "stored"
) -> Image.Image:
    """Decode `path` fully (DICOM through pydicom with `dicom_window`, see `read_dicom`). For
    JPEGs, when `min_side` is given, libjpeg's DCT scaling (PIL's `draft`) decodes at 1/2, 1/4
    or 1/8 scale while the shorter side stays >= `min_side`."""
    if not path.is_file():
        raise ToolkitError(f"{path}: image file is missing")
    if path.suffix.lower() == ".dcm":
        try:
            return read_dicom(path, window=dicom_window)
        except Exception as error:  # pydicom raises many types for a broken file
            raise ToolkitError(f"{path}: cannot decode DICOM ({error})") from error
    try:
        with Image.open(path) as image:
            if min_side is not None and image.format == "JPEG":
                scale = min(image.size) / min_side
                if scale >= 2:
                    image.draft(
                        image.mode, (image.size[0] // int(scale), image.size[1] // int(scale))
                    )
            frames = getattr(image, "n_frames", 1)
            if frames > 1:  # an animated GIF, a multi-page TIFF: one image per file
                logger.warning(
                    "%s holds %d frames; the first is embedded (save the frame you mean as "
                    "its own file to choose another)",
                    path,
                    frames,
                )
                image.seek(0)
            image.load()
            if image.mode in ("L", "RGB"):
                return image.copy()
            return _to_standard_mode(image, path)
    except (OSError, SyntaxError, ValueError) as error:
        raise ToolkitError(f"{path}: cannot decode image ({error})") from error


def _to_standard_mode(image: Image.Image, path: Path) -> Image.Image:
    """Grey images deeper than 8 bits (16- or 32-bit integer, 32-bit float) are rescaled to
    8-bit by their own range, as DICOM without a window is; palettes and alpha become RGB.
    (PIL's own conversion of a float image clips it to 0-255: a 0-1 float TIFF would be black.)"""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        import numpy as np

        pixels = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(pixels)
        if not finite.all():
            raise ToolkitError(
                f"{path}: {int((~finite).sum())} of {pixels.size} pixels of this {image.mode} "
                "image are NaN or infinite, which no 8-bit rescaling can place; fill them "
                "(e.g. with the minimum) and save again"
            )
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) / (high - low or 1.0) * 255.0
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    return image.convert("RGB")
