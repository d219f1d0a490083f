"""The fixed table of rows a store will hold, known before the first image is decoded."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.key import dataset_fingerprint
from medprobe.cache.layout.schema import SPLITS


@dataclass(frozen=True, eq=False)
class RowTable:
    """One row per image, in extraction order.

    ids: image path relative to the dataset root; splits: 'train' | 'val' | 'test';
    labels: (N,) int64 class index, or (N, L) int8 for multi-label with `label_mask` (N, L) bool
    marking known labels; groups: patient or lesion id per row, or None. metadata: column name
    -> one str per row ('' where the dataset does not say: missing stays missing), e.g. sex, age,
    view, and `study` (the unit `--aggregate study` pools: '' makes an image its own unit).

    Metadata is not part of the fingerprint (nor of the store key): it describes the images and
    changes no embedding, so `cache annotate` can add it to a store extracted before.
    """

    ids: Sequence[str]
    splits: Sequence[str]
    labels: np.ndarray
    label_mask: np.ndarray | None = None
    groups: Sequence[str] | None = None
    metadata: Mapping[str, Sequence[str]] | None = None

    def __post_init__(self) -> None:
        n_rows = len(self.ids)
        for name in ("splits", "labels", "label_mask", "groups"):
            value = getattr(self, name)
            if value is not None and len(value) != n_rows:
                raise ToolkitError(f"RowTable.{name} has {len(value)} rows but ids has {n_rows}")
        for column, values in (self.metadata or {}).items():
            check_metadata_column(column, len(values), n_rows)
        unknown = sorted(set(self.splits) - set(SPLITS))
        if unknown:
            raise ToolkitError(f"unknown split name(s) {unknown}; splits are {list(SPLITS)}")
        if len(set(self.ids)) != n_rows:
            seen: set[str] = set()
            duplicate = next(i for i in self.ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise ToolkitError(f"image id {duplicate!r} appears more than once in the dataset")
        if self.labels.ndim == 2 and self.label_mask is None:
            object.__setattr__(self, "label_mask", np.ones(self.labels.shape, dtype=bool))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def is_multilabel(self) -> bool:
        return self.labels.ndim == 2

    def split_rows(self, split: str) -> np.ndarray:
        """(n,) int64 positions of the rows in `split`, in table order."""
        return np.flatnonzero(np.asarray(self.splits) == split)

    def fingerprint(self) -> str:
        labels = self.labels
        if self.label_mask is not None:
            # Unknown labels are part of the content: encode them as -1 before hashing.
            labels = np.where(self.label_mask, labels, -1).astype(np.int8)
        return dataset_fingerprint(self.ids, self.splits, labels, self.groups)


def check_metadata_column(column: str, n_values: int, n_rows: int) -> None:
    """A metadata column is one HDF5 dataset name with one value per row."""
    if not column or "/" in column or column.startswith("."):
        raise ToolkitError(
            f"metadata column {column!r}: a name without '/' and not starting with '.'"
        )
    if n_values != n_rows:
        raise ToolkitError(f"metadata column {column!r} has {n_values} values for {n_rows} rows")


def metadata_value(text: object) -> str:
    """One metadata value as stored: '' for missing (blank, NaN, NA, None), never the text 'nan'."""
    if text is None:
        return ""
    value = str(text).strip()
    return "" if value.casefold() in {"", "nan", "na", "n/a", "none", "null"} else value
