"""Reading a store: the one way every other stage gets at embeddings, labels and metadata.

Every read is checked: a damaged file (a failed checksum, bytes h5py cannot read, ids that are not
text), embeddings with NaN or Inf, or labels outside the task's classes stop here with the store's
name, what is wrong and the fix, instead of reaching a probe as wrong numbers.
"""

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.inventory.checks import label_problems, nonfinite_rows
from medprobe.cache.key import CONTENT_VERSION
from medprobe.cache.layout.container import read_block_rows
from medprobe.cache.layout.schema import (
    CONTAINER_FORMAT_ATTR,
    EMBEDDINGS_GROUP,
    METADATA_GROUP,
    SKIPPED_GROUP,
    SPLITS,
    TOKENS_DATASET,
    UNCHECKSUMMED_CONTAINER_FORMAT,
)
from medprobe.cache.layout.tokens import TokenLayout, read_token_rows

if TYPE_CHECKING:  # pandas only where a frame is built
    import pandas as pd


RANDOM_INIT_MARK = " (random init)"


def display_model_name(model: Mapping[str, Any]) -> str:
    """A store spec's `model` section as a name to show: a random initialisation (the spec's
    `pretrained` false, no weights file) is never shown under the pretrained model's name."""
    name = str(model["name"])
    random_init = model.get("pretrained") is False and "weights_sha256" not in model
    return name + RANDOM_INIT_MARK if random_init else name


def damaged(path: Path, what: str) -> ToolkitError:
    """The error for a store whose bytes are wrong: there is no repair, only a recompute."""
    return ToolkitError(f"{what}: the file is damaged; `cache rm {path}` and extract again")


@dataclass(frozen=True)
class Store:
    """A store on disk. Arrays are read on demand and checked; nothing stays open between calls."""

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
    def content_version(self) -> int:
        """The version that keys content (`spec['format_version']`, see `cache.key`)."""
        return int(self.spec.get("format_version", 1))

    @property
    def container_format(self) -> int:
        """How the bytes are packed (`cache.layout.schema`): 3 checksummed, 2 not."""
        return int(self.attrs.get(CONTAINER_FORMAT_ATTR, UNCHECKSUMMED_CONTAINER_FORMAT))

    @property
    def checksummed(self) -> bool:
        return self.container_format > UNCHECKSUMMED_CONTAINER_FORMAT

    @property
    def outdated(self) -> str | None:
        """Why an earlier toolkit's store is not this toolkit's result for its spec, or None."""
        if self.content_version == CONTENT_VERSION:
            return None
        return (
            f"written in store format {self.content_version}, this toolkit writes format "
            f"{CONTENT_VERSION}; extract again (a new store), then `cache rm {self.path}`"
        )

    @property
    def trial(self) -> bool:
        """Written by a trial run on part of the images (`extract run --limit`)."""
        return self.info.get("limit") is not None

    @property
    def dataset_name(self) -> str:
        return str(self.spec["dataset"]["name"])

    @property
    def model_name(self) -> str:
        """The model as every listing, table, CSV and legend names it: the registry name, marked
        `(random init)` for an architecture run without its weights (`--no-pretrained`)."""
        return display_model_name(self.spec["model"])

    @property
    def model_id(self) -> str:
        """The model's name as its spec holds it (what the file name is made from)."""
        return str(self.spec["model"]["name"])

    @property
    def task(self) -> dict[str, Any]:
        """Label semantics: kind ('multiclass' | 'binary' | 'ordinal' | 'multilabel'),
        label_names, headline_metric."""
        return dict(self.spec.get("task", {}))

    @property
    def poolings(self) -> tuple[str, ...]:
        return tuple(self.spec["poolings"])

    @contextmanager
    def h5(self) -> Iterator[h5py.File]:
        """The store's HDF5 file, open for reading; a file h5py cannot open is damaged."""
        try:
            handle = h5py.File(self.path, "r")
        except OSError as error:
            raise damaged(self.path, f"cannot open {self.path} ({error})") from error
        with handle:
            yield handle

    def _read(self, name: str, rows: slice | None = None) -> np.ndarray | None:
        """Dataset `name` read whole, or its `rows` (None when absent); a failed read names
        the dataset."""
        with self.h5() as handle:
            try:
                if name not in handle:
                    return None
                return handle[name][()] if rows is None else handle[name][rows]
            except OSError as error:
                raise self.read_failure(name, error) from error

    def read_failure(self, name: str, error: OSError) -> ToolkitError:
        """The error for dataset `name` that h5py could not read: with checksums, a mismatch."""
        if self.checksummed:
            return damaged(self.path, f"checksum mismatch in {self.path} {name}")
        return damaged(self.path, f"cannot read {name} from {self.path} ({error})")

    @cached_property
    def splits(self) -> tuple[str, ...]:
        with self.h5() as handle:
            return tuple(s for s in SPLITS if s in handle)

    @cached_property
    def n_rows(self) -> dict[str, int]:
        """Rows per split, from the shape of `ids` (no data read)."""
        with self.h5() as handle:
            return {s: int(handle[f"{s}/ids"].shape[0]) for s in self.splits}

    @cached_property
    def dim(self) -> int | None:
        """Embedding size of the first pooling (None for a store without rows)."""
        if not self.splits:
            return None
        with self.h5() as handle:
            name = f"{self.splits[0]}/{EMBEDDINGS_GROUP}/{self.poolings[0]}"
            return int(handle[name].shape[1])

    def _require_split(self, split: str) -> None:
        if split not in self.splits:
            raise ToolkitError(
                f"store {self.path} has no split {split!r}; it has {list(self.splits)}"
            )

    def _require_rows(self, name: str, values: np.ndarray, split: str) -> np.ndarray:
        if len(values) != self.n_rows[split]:
            raise damaged(
                self.path, f"{self.path} {name} has {len(values)} rows for {self.n_rows[split]} ids"
            )
        return values

    def _strings(self, name: str, rows: slice | None = None) -> np.ndarray | None:
        raw = self._read(name, rows)
        if raw is None:
            return None
        try:
            return np.asarray([b.decode("utf-8") for b in raw], dtype=object)
        except (UnicodeDecodeError, AttributeError) as error:
            raise damaged(self.path, f"{self.path} {name} holds bytes that are not text") from error

    def ids(self, split: str, rows: slice | None = None) -> np.ndarray:
        """(N,) str image ids of `split`, in row order; `rows` reads only that slice of them."""
        self._require_split(split)
        return self._strings(f"{split}/ids", rows)

    def labels(self, split: str) -> np.ndarray:
        """(N,) int64 class indices, or (N, L) int8 for multi-label stores; checked against
        the task's classes (and multi-label values against {0, 1} where known)."""
        self._require_split(split)
        labels = self._require_rows(f"{split}/labels", self._read(f"{split}/labels"), split)
        mask = self._read(f"{split}/label_mask")
        problems = label_problems(labels, mask, self.task, sum(self.n_rows.values()))
        if problems:
            raise damaged(self.path, f"{self.path} {split}/labels: {'; '.join(problems)}")
        return labels

    def label_mask(self, split: str) -> np.ndarray | None:
        """(N, L) bool, False where a multi-label target is unknown; None for single-label."""
        self._require_split(split)
        mask = self._read(f"{split}/label_mask")
        if mask is None:
            return None
        return self._require_rows(f"{split}/label_mask", mask.astype(bool, copy=False), split)

    def groups(self, split: str) -> np.ndarray | None:
        """(N,) str patient or lesion id per row, or None when the dataset has none."""
        self._require_split(split)
        groups = self._strings(f"{split}/groups")
        return None if groups is None else self._require_rows(f"{split}/groups", groups, split)

    @cached_property
    def metadata_columns(self) -> tuple[str, ...]:
        """The per-image metadata columns the store holds (sorted; () for none)."""
        with self.h5() as handle:
            columns: set[str] = set()
            for split in self.splits:
                group = handle[split].get(METADATA_GROUP)
                columns.update(group.keys() if isinstance(group, h5py.Group) else ())
        return tuple(sorted(columns))

    def metadata(self, split: str) -> dict[str, np.ndarray]:
        """column -> (N,) str per image of `split`, '' where missing (a column the split lacks
        is all missing)."""
        self._require_split(split)
        columns = {}
        for column in self.metadata_columns:
            values = self._strings(f"{split}/{METADATA_GROUP}/{column}")
            if values is None:
                values = np.full(self.n_rows[split], "", dtype=object)
            columns[column] = self._require_rows(
                f"{split}/{METADATA_GROUP}/{column}", values, split
            )
        return columns

    def embeddings(
        self, split: str, pooling: str, dtype: Any = np.float32, rows: slice | None = None
    ) -> np.ndarray:
        """(N, D) embeddings of `split` under `pooling`, as `dtype` (None: as stored); refused
        when a row holds NaN or Inf. `rows` reads only that slice, so a large store can be
        streamed chunk by chunk.

        Read block by block into one array of `dtype`: memory is that array plus one block,
        never a second full copy, and numpy converts float16 faster than HDF5 does (h5py's
        `astype` read took about twice as long for (100000, 1024) float16).
        """
        self._require_split(split)
        if pooling not in self.poolings:
            raise ToolkitError(
                f"store {self.path.name} has no pooling {pooling!r}; it has {list(self.poolings)}"
            )
        name = f"{split}/{EMBEDDINGS_GROUP}/{pooling}"
        with self.h5() as handle:
            if name not in handle:
                raise damaged(self.path, f"{self.path} lacks {name}")
            dataset = handle[name]
            self._require_rows(name, dataset, split)
            first, stop, stride = (rows or slice(None)).indices(len(dataset))
            if stride != 1:
                raise ValueError(f"rows={rows}: a contiguous slice of rows, not every {stride}th")
            shape = (max(0, stop - first), dataset.shape[1])
            values = np.empty(shape, dtype=dataset.dtype if dtype is None else dtype)
            n_bad, step = 0, read_block_rows(dataset)
            for start in range(0, len(values), step):
                block = values[start : start + step]
                try:
                    block[...] = dataset[first + start : first + start + len(block)]
                except OSError as error:
                    raise self.read_failure(name, error) from error
                n_bad += nonfinite_rows(block)
        if n_bad:
            raise damaged(self.path, f"{self.path} {name}: {n_bad} rows hold NaN or Inf")
        return values

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

    @property
    def has_tokens(self) -> bool:
        """Whether the store holds each image's token grid (`extract run --tokens N`)."""
        return self.spec.get("tokens") is not None

    @cached_property
    def token_layout(self) -> dict[str, Any] | None:
        """{'grid': (h, w), 'prefix_tokens': p} of the tokens (T = p + h*w), or None."""
        if not self.has_tokens:
            return None
        layout = TokenLayout.from_spec(self.spec["tokens"])
        return {"grid": layout.grid, "prefix_tokens": layout.prefix_tokens}

    @property
    def token_shape(self) -> tuple[int, int] | None:
        """(T, D) of one image's tokens, or None in a store without tokens."""
        return TokenLayout.from_spec(self.spec["tokens"]).shape if self.has_tokens else None

    def tokens(self, split: str, rows: slice | np.ndarray) -> np.ndarray:
        """(len(rows), T, D) float32 tokens of `split`'s `rows` (a contiguous slice or row
        indices, in the order given), reading only those rows' chunks; refused when a row read
        holds NaN or Inf, or the entry does not cover the split."""
        self._require_split(split)
        if not self.has_tokens:
            raise ToolkitError(
                f"store {self.path} holds no tokens; extract again with `extract run --tokens 8`"
            )
        name = f"{split}/{TOKENS_DATASET}"
        with self.h5() as handle:
            if name not in handle:
                raise damaged(self.path, f"{self.path} lacks {name}")
            dataset = handle[name]
            if dataset.shape != (self.n_rows[split], *self.token_shape):
                raise damaged(
                    self.path,
                    f"{self.path} {name} has shape {dataset.shape} for "
                    f"{self.n_rows[split]} ids of {self.token_shape} tokens (truncated)",
                )
            try:
                values = read_token_rows(dataset, rows)
            except OSError as error:
                raise self.read_failure(name, error) from error
            except IndexError as error:
                raise ToolkitError(f"rows of {split!r} in {self.path.name}: {error}") from error
        n_bad = nonfinite_rows(values)
        if n_bad:
            raise damaged(self.path, f"{self.path} {name}: {n_bad} rows hold NaN or Inf")
        return values

    def skipped(self) -> list[tuple[str, str]]:
        """(image id, reason) for every image left out under --on-error skip."""
        ids = self._strings(f"{SKIPPED_GROUP}/ids")
        reasons = self._strings(f"{SKIPPED_GROUP}/reasons")
        if ids is None or reasons is None:
            return []
        return list(zip(ids.tolist(), reasons.tolist(), strict=True))

    def to_frame(self, split: str = "train", pooling: str | None = None) -> "pd.DataFrame":
        """One split as a DataFrame indexed by image id: `label` (or one column per label
        name for multi-label, <NA> where unknown), `group` when the store has groups, then
        the embedding as float32 columns e0 … e{D-1}. `pooling` defaults to the first."""
        import pandas as pd

        pooling = pooling or self.poolings[0]
        embeddings = self.embeddings(split, pooling)
        frame = pd.DataFrame(
            embeddings, columns=[f"e{i}" for i in range(embeddings.shape[1])], copy=False
        )
        labels, mask = self.labels(split), self.label_mask(split)
        if mask is None:
            label_columns = {"label": labels}
        else:
            names = list(self.task.get("label_names") or range(labels.shape[1]))
            label_columns = {
                str(name): pd.Series(labels[:, j], dtype="Int8").mask(~mask[:, j])
                for j, name in enumerate(names)
            }
        groups = self.groups(split)
        leading = pd.DataFrame(
            {**label_columns, **({"group": groups} if groups is not None else {})}
        )
        frame = pd.concat([leading, frame], axis=1)
        frame.index = pd.Index(self.ids(split), name="id")
        return frame
