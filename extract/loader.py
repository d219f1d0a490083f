"""Decode each image once and cut every input geometry the requested models need from it."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medprobe.cache import Store, open_store
from medprobe.extract.datasets.base import ImageDataset
from medprobe.extract.models.spec import Preprocessing
from medprobe.extract.transforms import to_model_input

# The one "pooling" of a pixel cache: the decoded uint8 input, flattened.
PIXELS_POOLING = "pixels"
# One dataset item: (position, one uint8 view per geometry, None) or (position, None, "path:
# reason") when the image could not be read.
Item = tuple[int, list[torch.Tensor] | None, str | None]


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

    def __getitem__(self, position: int) -> Item:
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
    the same dataset and geometry skips decoding entirely. One store per geometry, same rows,
    read through `medprobe.cache`'s `Store` a batch at a time (one open per store and split)."""

    def __init__(
        self, stores: Sequence[Path], ids: Sequence[str], views: Sequence[Preprocessing]
    ) -> None:
        self.stores: list[Store] = [open_store(path) for path in stores]
        self.ids = list(ids)
        self.shapes = [(v.channels, v.input_size, v.input_size) for v in views]
        first = self.stores[0]
        self.location: dict[str, tuple[str, int]] = {
            image_id: (split, row)
            for split in first.splits
            for row, image_id in enumerate(first.ids(split))
        }

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, position: int) -> Item:
        return self.__getitems__([position])[0]

    def __getitems__(self, positions: Sequence[int]) -> list[Item]:
        """The DataLoader's batched fetch: each store is read once per split for the batch."""
        views: list[list[torch.Tensor]] = [[] for _ in positions]
        errors: list[str | None] = [None] * len(positions)
        slots_by_split: dict[str, list[tuple[int, int]]] = {}
        for slot, position in enumerate(positions):
            image_id = self.ids[position]
            if image_id not in self.location:
                errors[slot] = f"{image_id}: unreadable when the pixel cache was written"
                continue
            split, row = self.location[image_id]
            slots_by_split.setdefault(split, []).append((slot, row))
        for store, shape in zip(self.stores, self.shapes, strict=True):
            for split, slots in slots_by_split.items():
                rows = np.array([row for _, row in slots], dtype=np.int64)
                values = store.embedding_rows(split, PIXELS_POOLING, rows)
                for (slot, _), value in zip(slots, values, strict=True):
                    views[slot].append(torch.from_numpy(value.reshape(shape)))
        return [
            (position, None, error) if error else (position, views[slot], None)
            for slot, (position, error) in enumerate(zip(positions, errors, strict=True))
        ]


def collate(items: list[Item]) -> DecodedBatch:
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
