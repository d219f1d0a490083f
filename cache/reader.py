"""Reading a store: the one way every other stage gets at embeddings, labels and metadata."""

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.key import STORE_FORMAT_VERSION
from medprobe.cache.schema import EMBEDDINGS_GROUP, SKIPPED_GROUP, SPLITS


@dataclass(frozen=True)
class Store:
    """A complete store on disk. Arrays are read on demand; nothing stays open between calls."""

    path: Path
    attrs: dict[str, Any]

    @cached_property
    def spec(self) -> dict[str, Any]:
        return json.loads(self.attrs["spec"])

    @cached_property
    def info(self) -> dict[str, Any]:
        return json.loads(self.attrs.get("info", "{}"))

    @property
    def key(self) -> str:
        return str(self.attrs["key"])

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def format_version(self) -> int:
        return int(self.spec.get("format_version", 1))

    @property
    def outdated(self) -> str | None:
        """Why an earlier toolkit's store is not this toolkit's result for its spec, or None."""
        if self.format_version == STORE_FORMAT_VERSION:
            return None
        return (
            f"written in store format {self.format_version}, this toolkit writes format "
            f"{STORE_FORMAT_VERSION}; extract again (a new store), then `cache rm {self.path}`"
        )

    @property
    def dataset_name(self) -> str:
        return str(self.spec["dataset"]["name"])

    @property
    def model_name(self) -> str:
        return str(self.spec["model"]["name"])

    @property
    def task(self) -> dict[str, Any]:
        """Label semantics: kind ('multiclass' | 'binary' | 'ordinal' | 'multilabel'),
        label_names, headline_metric."""
        return dict(self.spec.get("task", {}))

    @property
    def poolings(self) -> tuple[str, ...]:
        return tuple(self.spec["poolings"])

    @cached_property
    def splits(self) -> tuple[str, ...]:
        with h5py.File(self.path, "r") as handle:
            return tuple(s for s in SPLITS if s in handle)

    def _read(self, name: str) -> np.ndarray | None:
        with h5py.File(self.path, "r") as handle:
            if name not in handle:
                return None
            return handle[name][()]

    def _require_split(self, split: str) -> None:
        if split not in self.splits:
            raise ToolkitError(
                f"store {self.path} has no split {split!r}; it has {list(self.splits)}"
            )

    def ids(self, split: str) -> np.ndarray:
        """(N,) str image ids of `split`, in row order."""
        self._require_split(split)
        return np.asarray([b.decode() for b in self._read(f"{split}/ids")], dtype=object)

    def labels(self, split: str) -> np.ndarray:
        """(N,) int64 class indices, or (N, L) int8 for multi-label stores."""
        self._require_split(split)
        return self._read(f"{split}/labels")

    def label_mask(self, split: str) -> np.ndarray | None:
        """(N, L) bool, False where a multi-label target is unknown; None for single-label."""
        self._require_split(split)
        return self._read(f"{split}/label_mask")

    def groups(self, split: str) -> np.ndarray | None:
        self._require_split(split)
        raw = self._read(f"{split}/groups")
        return None if raw is None else np.asarray([b.decode() for b in raw], dtype=object)

    def embeddings(self, split: str, pooling: str, dtype: Any = np.float32) -> np.ndarray:
        """(N, D) embeddings of `split` under `pooling`, cast to `dtype` (None: as stored)."""
        self._require_split(split)
        if pooling not in self.poolings:
            raise ToolkitError(
                f"store {self.path.name} has no pooling {pooling!r}; it has {list(self.poolings)}"
            )
        values = self._read(f"{split}/{EMBEDDINGS_GROUP}/{pooling}")
        return values if dtype is None else values.astype(dtype, copy=False)

    def embedding_rows(self, split: str, pooling: str, rows: np.ndarray) -> np.ndarray:
        """(len(rows), D) rows `rows` of `split` under `pooling`, as stored and in the order
        given, reading only those rows (a pixel cache is far larger than memory)."""
        self._require_split(split)
        if pooling not in self.poolings:
            raise ToolkitError(
                f"store {self.path.name} has no pooling {pooling!r}; it has {list(self.poolings)}"
            )
        # h5py reads increasing, unique indices; the inverse puts them back in the order asked.
        unique_rows, order = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
        with h5py.File(self.path, "r") as handle:
            values = handle[f"{split}/{EMBEDDINGS_GROUP}/{pooling}"][unique_rows]
        return values[order]

    def skipped(self) -> list[tuple[str, str]]:
        """(image id, reason) for every image left out under --on-error skip."""
        with h5py.File(self.path, "r") as handle:
            if SKIPPED_GROUP not in handle:
                return []
            group = handle[SKIPPED_GROUP]
            return [
                (i.decode(), r.decode())
                for i, r in zip(group["ids"][()], group["reasons"][()], strict=True)
            ]


def read_attrs(path: Path) -> dict[str, Any]:
    """The root attributes of an HDF5 file, decoded to Python values."""
    try:
        with h5py.File(path, "r") as handle:
            return {
                k: (v.item() if isinstance(v, np.generic) else v) for k, v in handle.attrs.items()
            }
    except OSError as error:
        raise ToolkitError(
            f"{path} is not a readable HDF5 store ({error}); remove it with "
            f"`cache rm {path}` and extract again"
        ) from error


def open_store(path: str | Path, *, require_complete: bool = True) -> Store:
    """Open a store for reading; an incomplete one is refused unless asked for."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"no store at {path}")
    attrs = read_attrs(path)
    if "spec" not in attrs or "key" not in attrs:
        raise ToolkitError(f"{path} is an HDF5 file but not a store (no 'spec'/'key' attributes)")
    store = Store(path=path, attrs=attrs)
    if require_complete and not store.complete:
        raise ToolkitError(f"store {path} is not complete; rerun the extraction that writes it")
    return store
