"""Decode each image once and cut every input geometry the requested models need from it."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medprobe.extract.datasets.base import ImageDataset
from medprobe.extract.models.spec import Preprocessing
from medprobe.extract.transforms import to_model_input


@dataclass
class DecodedBatch:
    """One batch of consecutive positions.

    start: position of the first item; ok: (B,) bool, False where decoding failed; views:
    one (n_ok, C, H, W) uint8 tensor per geometry; failures: position -> "path: reason".
    """

    start: int
    ok: np.ndarray
    views: list[torch.Tensor]
    failures: dict[int, str]

    def pin_memory(self) -> "DecodedBatch":
        """Called by the DataLoader's pinning thread: page-locked views copy to the GPU
        asynchronously (non_blocking) instead of through a staging buffer."""
        return DecodedBatch(
            self.start, self.ok, [v.pin_memory() for v in self.views], self.failures
        )


class DecodedImages(Dataset):
    """Item i is position i of `row_indices`: the image decoded once, cut to each geometry."""

    def __init__(
        self, dataset: ImageDataset, row_indices: np.ndarray, views: Sequence[Preprocessing]
    ) -> None:
        self.dataset = dataset
        self.row_indices = row_indices
        self.views = list(views)
        # Decoding at reduced scale is safe down to the largest side any geometry resizes to.
        self.min_side = max(v.resize_size for v in self.views)

    def __len__(self) -> int:
        return len(self.row_indices)

    def __getitem__(self, position: int) -> tuple[int, list[torch.Tensor] | None, str | None]:
        return position, *self.decode(position)

    def decode(self, position: int) -> tuple[list[torch.Tensor] | None, str | None]:
        """(one view per geometry, None), or (None, "path: reason") if decoding failed."""
        row = int(self.row_indices[position])
        try:
            image = self.dataset.read_image(row, min_side=self.min_side)
            return [to_model_input(image, v) for v in self.views], None
        except Exception as error:  # any decoder failure becomes a per-image record
            where = self.dataset.image_path(row) or self.dataset.rows.ids[row]
            message = str(error)
            return None, message if str(where) in message else f"{where}: {message}"


class CachedPixels(Dataset):
    """Item i is position i, read back from pixel stores instead of decoded: a later model over
    the same dataset and geometry skips decoding entirely. One store per geometry, same rows."""

    def __init__(
        self, stores: Sequence[Path], ids: Sequence[str], views: Sequence[Preprocessing]
    ) -> None:
        self.stores = list(stores)
        self.ids = list(ids)
        self.shapes = [(v.channels, v.input_size, v.input_size) for v in views]
        self.location: dict[str, tuple[str, int]] = {}
        with h5py.File(self.stores[0], "r") as handle:
            for split in ("train", "val", "test"):
                if split in handle:
                    for row, image_id in enumerate(handle[f"{split}/ids"][()]):
                        self.location[image_id.decode()] = (split, row)
        self._handles: list[h5py.File] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, position: int) -> tuple[int, list[torch.Tensor] | None, str | None]:
        if self._handles is None:  # opened lazily: each loader worker needs its own handles
            self._handles = [h5py.File(path, "r") for path in self.stores]
        image_id = self.ids[position]
        if image_id not in self.location:
            return position, None, f"{image_id}: unreadable when the pixel cache was written"
        split, row = self.location[image_id]
        tensors = [
            torch.from_numpy(handle[f"{split}/embeddings/pixels"][row].reshape(shape))
            for handle, shape in zip(self._handles, self.shapes, strict=True)
        ]
        return position, tensors, None


def collate(items: list[tuple[int, list[torch.Tensor] | None, str | None]]) -> DecodedBatch:
    positions = [p for p, _, _ in items]
    ok = np.array([tensors is not None for _, tensors, _ in items], dtype=bool)
    decoded = [tensors for _, tensors, _ in items if tensors is not None]
    n_views = len(decoded[0]) if decoded else 0
    views = [torch.stack([d[v] for d in decoded]) for v in range(n_views)]
    failures = {p: error for p, _, error in items if error is not None}
    return DecodedBatch(start=positions[0], ok=ok, views=views, failures=failures)


def make_loader(
    images: Dataset,
    *,
    collate_fn: Callable[[list], Any] = collate,
    start: int,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
) -> DataLoader:
    """Batches in position order from `start` (earlier positions are already stored)."""
    subset = torch.utils.data.Subset(images, range(start, len(images)))
    return DataLoader(
        subset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None,
    )
