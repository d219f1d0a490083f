"""How a store's bytes are packed in HDF5: every dataset chunked under Fletcher-32 checksums,
strings as fixed-length UTF-8, and files small enough built in memory and published whole.

A checksum turns a damaged byte into a failed read (an OSError from h5py) instead of a wrong
number. HDF5 cannot checksum variable-length strings (their bytes live in a heap outside the
dataset), hence fixed-length ones; plain h5py reads both kinds as bytes.
"""

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from medprobe.cache.files.atomic import write_atomically

# Rows read at a time: whole chunks, about this many bytes of the stored dtype.
READ_BLOCK_BYTES = 32 << 20


def read_block_rows(dataset: h5py.Dataset) -> int:
    """Rows per read block of `dataset`: a multiple of its chunk's rows (no chunk is read and
    checksummed twice), about READ_BLOCK_BYTES."""
    row_bytes = max(1, int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize)
    chunk_rows = dataset.chunks[0] if dataset.chunks else 1
    return max(1, READ_BLOCK_BYTES // row_bytes // chunk_rows) * chunk_rows


def string_array(values: Sequence[str]) -> np.ndarray:
    """(N,) fixed-length UTF-8 bytes, as wide as the longest value (at least 1 byte)."""
    encoded = [value.encode("utf-8") for value in values]
    width = max((len(e) for e in encoded), default=1)
    return np.array(encoded, dtype=h5py.string_dtype("utf-8", max(1, width)))


def checksummed_dataset(
    group: h5py.Group,
    name: str,
    data: Any = None,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: Any = None,
    chunks: tuple[int, ...] | bool = True,
) -> h5py.Dataset:
    """A dataset chunked under HDF5's Fletcher-32 filter, from `data` or empty of `shape`."""
    if data is not None:
        data = np.asarray(data)
        shape = data.shape
    if shape is None:
        raise ValueError("checksummed_dataset needs data or a shape")
    # HDF5 cannot chunk a dimension of length 0 unless it may grow.
    maxshape = (None, *shape[1:]) if shape and shape[0] == 0 else None
    return group.create_dataset(
        name,
        shape=shape,
        dtype=dtype,
        data=data,
        chunks=chunks,
        maxshape=maxshape,
        fletcher32=True,
    )


def write_hdf5(target: Path, build: Callable[[h5py.File], object]) -> int:
    """Build an HDF5 file in memory with `build(file)` and publish its bytes at `target`
    (temporary name, fsync, rename). Returns the bytes written.

    HDF5 never writes to the disk here, so a full or read-only disk fails as an ordinary OSError
    in plain file I/O. A write that fails inside HDF5 instead leaves the library unable to close
    the file, and the process crashes when it is finally released (h5py 3.16 with HDF5 2.0 exits
    with a segfault), whichever thread it happened in.
    """
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        build(handle)
    image = buffer.getbuffer()
    try:
        write_atomically(Path(target), lambda tmp: tmp.write_bytes(image))
        return image.nbytes
    finally:
        image.release()
