"""scikit-learn's bundled 8x8 handwritten digits: a real, offline image dataset for the demo."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medprobe.cache.rows import RowTable
from medprobe.extract.datasets.base import ImageDataset, TaskInfo
from medprobe.extract.datasets.splits import stratified_split

DIGITS_FRACTIONS = (0.6, 0.1, 0.3)
# Upscale so a 224-px model sees strokes, not single pixels; resizing to input happens later.
DIGITS_SIDE = 64


@dataclass
class DigitsDataset(ImageDataset):
    """1,797 grey 8x8 digits (values 0-16) upscaled to 64 px; stratified 60/10/30, seed 42."""

    def __post_init__(self) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        self._images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
        labels = digits.target.astype(np.int64)
        self.resolve_split_by("image", None)
        splits = stratified_split(labels, fractions=DIGITS_FRACTIONS, seed=self.seed)
        ids = [f"digit_{i:04d}" for i in range(len(labels))]
        self.rows = RowTable(ids=ids, splits=splits.tolist(), labels=labels)
        self.task = TaskInfo(kind="multiclass", label_names=tuple(str(d) for d in range(10)))
        self.info["split"] = f"stratified {DIGITS_FRACTIONS}, seed {self.seed}"
        self.info["source"] = "sklearn.datasets.load_digits"

    def image_path(self, row: int) -> Path | None:
        return None

    def sources_fingerprint(self, rows: Sequence[int]) -> str:
        """sha256 of the rows' pixels (1,797 x 64 bytes: hashing them costs nothing)."""
        return hashlib.sha256(self._images[np.asarray(rows, dtype=np.int64)].tobytes()).hexdigest()

    def read_image(self, row: int, *, min_side: int | None = None) -> Image.Image:
        image = Image.fromarray(self._images[row], mode="L")
        return image.resize((DIGITS_SIDE, DIGITS_SIDE), Image.Resampling.NEAREST)
