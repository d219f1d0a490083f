"""Store keys: a hash of everything that changes a store's bytes, so equal keys mean equal stores.

As in Hugging Face `datasets`' fingerprints, a value that cannot be hashed faithfully is an error,
never a random key that would make the cache silently miss.
"""

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.layout.tokens import TokenLayout

# The version that keys content: bump when the embedding bytes written for the same inputs change
# (dtype handling, row order, the pixels a preprocessing cuts), which recomputes every store.
# 2: resize and centre-crop arithmetic exactly torchvision's. How those bytes are packed in the
# file (checksums, string layout) is the container format,
# `cache.layout.schema.CONTAINER_FORMAT`, which keys nothing. In the spec it keeps its first
# name, "format_version": renaming it would change every key.
CONTENT_VERSION = 2
# Embeddings are float16 or float32; uint8 holds decoded pixels (the preprocessed-image cache).
STORE_DTYPES = ("float16", "float32", "uint8")


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolkitError(f"cannot hash {where}={value!r}: non-finite numbers have no stable key")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ToolkitError(
        f"cannot hash {where} of type {type(value).__name__}; store keys take only JSON values "
        "(str, int, float, bool, None, lists and mappings of them)"
    )


def canonical_json(value: Any, *, where: str = "value") -> str:
    """JSON with sorted keys and no whitespace: the same value always gives the same text."""
    return json.dumps(_jsonable(value, where), sort_keys=True, separators=(",", ":"))


def dataset_fingerprint(
    ids: Iterable[str], splits: Iterable[str], labels: np.ndarray, groups: Iterable[str] | None
) -> str:
    """sha256 over (id, split, label row, group) in row order: a relabel or re-split changes it.

    Image bytes are not hashed (reading every image would cost a full pass); ids are paths relative
    to the dataset root, so a dataset replaced in place under the same names keeps this
    fingerprint. (extract keys each image file's size and mtime beside it: `dataset.sources`.)
    """
    digest = hashlib.sha256()
    labels = np.ascontiguousarray(labels)
    digest.update(f"{labels.dtype.str}{labels.shape}".encode())
    group_list = list(groups) if groups is not None else None
    for row, (image_id, split) in enumerate(zip(ids, splits, strict=True)):
        digest.update(image_id.encode())
        digest.update(b"\0")
        digest.update(split.encode())
        digest.update(b"\0")
        digest.update(labels[row].tobytes())
        if group_list is not None:
            digest.update(group_list[row].encode())
        digest.update(b"\n")
    return digest.hexdigest()


def file_sha256(path: str, chunk_bytes: int = 1 << 22) -> str:
    """sha256 of a file's bytes (local checkpoints are keyed by content, not by name)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoreSpec:
    """Everything that determines a store's content, and nothing else; its hash is the store key.

    `dataset` holds at least `name` and `fingerprint` (plus options that change images, such as a
    crop task); `model` at least `name`, `source` and `checkpoint` (plus a weights hash for local
    files); `preprocessing` the resize, crop, mean, std, interpolation and channel handling; `task`
    the label semantics (kind, label names, headline metric).
    """

    dataset: Mapping[str, Any]
    model: Mapping[str, Any]
    preprocessing: Mapping[str, Any]
    poolings: tuple[str, ...]
    dtype: str = "float16"
    task: Mapping[str, Any] = field(default_factory=dict)
    # The token grid layout (`cache.layout.tokens.TokenLayout.from_spec`) when the store holds
    # tokens.
    tokens: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in STORE_DTYPES:
            raise ToolkitError(f"dtype={self.dtype!r} is not supported; use float16 or float32")
        if not self.poolings:
            raise ToolkitError("a store needs at least one pooling (e.g. 'cls' or 'mean')")
        for section, required in (("dataset", ("name", "fingerprint")), ("model", ("name",))):
            missing = [k for k in required if k not in getattr(self, section)]
            if missing:
                raise ToolkitError(f"StoreSpec.{section} lacks {missing}")
        if self.tokens is not None:
            TokenLayout.from_spec(self.tokens)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format_version": CONTENT_VERSION,
            "dataset": dict(self.dataset),
            "model": dict(self.model),
            "preprocessing": dict(self.preprocessing),
            "poolings": list(self.poolings),  # ordered: the first is the published one
            "dtype": self.dtype,
            "task": dict(self.task),
            # Only where there are tokens, so the key of every store without them is unchanged.
            **({"tokens": dict(self.tokens)} if self.tokens is not None else {}),
        }

    @property
    def token_layout(self) -> TokenLayout | None:
        return None if self.tokens is None else TokenLayout.from_spec(self.tokens)

    def key(self) -> str:
        """sha256 hex of the canonical JSON of `as_dict()`."""
        return hashlib.sha256(canonical_json(self.as_dict(), where="store").encode()).hexdigest()
