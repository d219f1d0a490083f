"""A store's token grids: each image's class/register tokens then its (pooled) patch tokens,
`(N, T, D)` float16 under `/<split>/tokens`, chunked one image per chunk.

One image per chunk because the probes that read tokens read rows (a support set, a batch of a
few hundred), never a column: a row costs one chunk's checksum and no neighbour's bytes.
The layout (`TokenLayout`) is part of the store's spec, so it is keyed and known before the first
image: the writer checks every batch against it and the plan can state the bytes per image.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.layout.container import checksummed_dataset
from medprobe.cache.layout.schema import TOKENS_DATASET

TOKEN_DTYPE = np.dtype("float16")
# Images per read when rows are gathered: bounds the float16 block beside the float32 result.
READ_IMAGES = 256


@dataclass(frozen=True)
class TokenLayout:
    """What one image's `(T, D)` token array holds: `prefix_tokens` class/register tokens first
    (0 for CNNs and SAM), then the `grid` (h, w) patch positions in row-major order."""

    grid: tuple[int, int]
    prefix_tokens: int
    dim: int

    def __post_init__(self) -> None:
        height, width = self.grid
        for name, value, least in (
            ("grid height", height, 1),
            ("grid width", width, 1),
            ("prefix_tokens", self.prefix_tokens, 0),
            ("dim", self.dim, 1),
        ):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ToolkitError(f"tokens {name}={value!r}: must be an integer")
            if value < least:
                raise ToolkitError(f"tokens {name}={value}: must be at least {least}")

    @property
    def n_tokens(self) -> int:
        """T: prefix tokens plus h * w patch positions."""
        return self.prefix_tokens + self.grid[0] * self.grid[1]

    @property
    def shape(self) -> tuple[int, int]:
        """(T, D) of one image."""
        return self.n_tokens, self.dim

    @property
    def bytes_per_image(self) -> int:
        return self.n_tokens * self.dim * TOKEN_DTYPE.itemsize

    @classmethod
    def from_spec(cls, tokens: Mapping[str, Any]) -> "TokenLayout":
        """From a StoreSpec's `tokens` mapping ({'grid': [h, w], 'prefix_tokens': p, 'dim': D},
        plus whatever else the writer keys, e.g. the requested `max_side`)."""
        missing = [k for k in ("grid", "prefix_tokens", "dim") if k not in tokens]
        if missing:
            raise ToolkitError(f"StoreSpec.tokens lacks {missing}")
        grid = tuple(tokens["grid"])
        if len(grid) != 2:
            raise ToolkitError(f"tokens grid={list(grid)}: must be [height, width]")
        return cls(grid=grid, prefix_tokens=tokens["prefix_tokens"], dim=tokens["dim"])

    def as_dict(self) -> dict[str, Any]:
        return {"grid": list(self.grid), "prefix_tokens": self.prefix_tokens, "dim": self.dim}


def check_token_batch(layout: TokenLayout, tokens: np.ndarray, n_ok: int) -> np.ndarray:
    """`tokens` (n_ok, T, D) as float16; a wrong shape is a programming error (ValueError)."""
    tokens = np.asarray(tokens)
    if tokens.shape != (n_ok, *layout.shape):
        raise ValueError(f"tokens: expected {(n_ok, *layout.shape)}, got {tokens.shape}")
    with np.errstate(over="ignore"):  # overflow is reported by the caller, by image name
        return tokens.astype(TOKEN_DTYPE)


def token_dataset(store: h5py.File, split: str, n_rows: int, layout: TokenLayout) -> h5py.Dataset:
    """The empty `(n_rows, T, D)` float16 tokens dataset of `split`, one image a chunk, carrying
    its grid and prefix count; the assembly streams the journal's parts into it."""
    dataset = checksummed_dataset(
        store,
        f"{split}/{TOKENS_DATASET}",
        shape=(n_rows, *layout.shape),
        dtype=TOKEN_DTYPE,
        chunks=(1, *layout.shape),
    )
    dataset.attrs["token_grid"] = list(layout.grid)
    dataset.attrs["prefix_tokens"] = layout.prefix_tokens
    return dataset


def read_token_rows(dataset: h5py.Dataset, rows: slice | np.ndarray) -> np.ndarray:
    """(len(rows), T, D) float32 rows of a tokens dataset, in the order given: a slice READ_IMAGES
    images at a time, an array image by image (only the chunks of those rows; memory is the
    result plus one block). `rows` is a contiguous slice or an array of row indices (repeats
    allowed). Raises OSError on a failed checksum and IndexError on a row outside the split."""
    n_rows = dataset.shape[0]
    if isinstance(rows, slice):
        first, stop, stride = rows.indices(n_rows)
        if stride != 1:
            raise ValueError(f"rows={rows}: a contiguous slice of rows, not every {stride}th")
        values = np.empty((max(0, stop - first), *dataset.shape[1:]), dtype=np.float32)
        for start in range(0, len(values), READ_IMAGES):
            block = values[start : start + READ_IMAGES]
            block[...] = dataset[first + start : first + start + len(block)]
        return values
    wanted = np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(wanted) and (wanted.min() < 0 or wanted.max() >= n_rows):
        bad = wanted[(wanted < 0) | (wanted >= n_rows)][0]
        raise IndexError(f"row {bad} is outside the split's {n_rows} rows")
    # One read per image (one chunk each): h5py's selection of a list of rows cost 20x as much
    # (0.85 s against 0.04 s for 256 rows of 64 x 768), which made a full budget's shuffled
    # mini-batches I/O-bound. Unique rows in increasing order; the inverse restores the order.
    unique_rows, order = np.unique(wanted, return_inverse=True)
    gathered = np.empty((len(unique_rows), *dataset.shape[1:]), dtype=np.float32)
    image = np.empty(dataset.shape[1:], dtype=dataset.dtype)
    for position, row in enumerate(unique_rows):
        dataset.read_direct(image, source_sel=np.s_[row])
        gathered[position] = image
    return gathered[order]
