"""Per-image test scores of every probe, kept so an analysis can be checked or extended later.

`predictions.h5` (plain h5py reads it):
```
/<dataset>/ids                                   (N,)   utf-8 str   test image ids, sorted
/<dataset>/labels                                (N,)   int64       class index, or (N, L) int8
                                                                    with -1 where unknown
/<dataset>/groups                                (N,)   utf-8 str   patient or lesion per image
                                                                    ('' none), where the store
                                                                    records them
/<dataset>/<model>/<pooling>/<method>/<budget>/seed<k>/scores
                                                 (N, K) float32     class probabilities, or (N, L)
                                                                    positive-label probabilities
```
Rows are in the order of `/<dataset>/ids` whatever each store's own row order. A `/` in a name
is written `%2F` (and `%` as `%25`), since `/` separates HDF5 groups.
"""

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from medprobe.cache.errors import ToolkitError

PREDICTIONS_FILE = "predictions.h5"
STRING_DTYPE = h5py.string_dtype(encoding="utf-8")


def escape_name(name: str) -> str:
    """A name usable as one HDF5 path component."""
    return name.replace("%", "%25").replace("/", "%2F")


def unescape_name(name: str) -> str:
    return name.replace("%2F", "/").replace("%25", "%")


# (model, pooling, method, budget, seed)
CellKey = tuple[str, str, str, str, int]


@dataclass
class DatasetPredictions:
    """One dataset's test split and every probe's scores on it.

    ids (N,) str sorted; labels (N,) int64 or (N, L) int8 with -1 unknown; scores per cell
    (N, K) float32, rows in `ids` order; groups (N,) str, each image's patient or lesion ('' for
    none), or None when the dataset records none.
    """

    ids: np.ndarray
    labels: np.ndarray
    scores: dict[CellKey, np.ndarray] = field(default_factory=dict)
    groups: np.ndarray | None = None

    def add(self, key: CellKey, store_ids: np.ndarray, scores: np.ndarray) -> None:
        """Record scores whose rows follow `store_ids` (a store's own test order)."""
        order = np.argsort(store_ids.astype(str), kind="stable")
        if not np.array_equal(store_ids[order].astype(str), self.ids.astype(str)):
            raise ValueError(f"{key}: the store's test ids differ from the dataset's")
        self.scores[key] = np.asarray(scores, dtype=np.float32)[order]


@dataclass
class Predictions:
    """Every dataset's predictions; `save` writes predictions.h5, `load` reads it back."""

    datasets: dict[str, DatasetPredictions] = field(default_factory=dict)

    def __iter__(self) -> Iterator[tuple[str, DatasetPredictions]]:
        return iter(self.datasets.items())

    def scores(
        self, dataset: str, model: str, pooling: str, method: str, budget: str, seed: int = 0
    ) -> np.ndarray:
        """(N, K) float32 scores of one probe, rows in `self.datasets[dataset].ids` order."""
        try:
            return self.datasets[dataset].scores[(model, pooling, method, budget, seed)]
        except KeyError:
            raise ToolkitError(
                f"no predictions for {dataset} {model}:{pooling} {method} {budget} seed {seed}; "
                f"saved: {sorted(self.datasets.get(dataset, DatasetPredictions([], [])).scores)}"
            ) from None

    def save(self, path: Path) -> None:
        """Write predictions.h5. HDF5 builds the file in memory and Python writes its bytes: a
        disk that fills up then fails as one OSError, where HDF5 writing to disk itself leaves
        a file it cannot close (errors at every later clean-up, a crash at exit)."""
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as handle:
            self._write(handle)
        with open(path, "wb") as handle:
            handle.write(buffer.getbuffer())

    def _write(self, handle: h5py.File) -> None:
        for dataset, part in self.datasets.items():
            group = handle.create_group(escape_name(dataset))
            group.create_dataset("ids", data=[str(i) for i in part.ids], dtype=STRING_DTYPE)
            group.create_dataset("labels", data=part.labels)
            if part.groups is not None:
                group.create_dataset(
                    "groups", data=[str(g) for g in part.groups], dtype=STRING_DTYPE
                )
            for (model, pooling, method, budget, seed), scores in part.scores.items():
                name = "/".join(
                    escape_name(n) for n in (model, pooling, method, budget, f"seed{seed}")
                )
                group.create_dataset(f"{name}/scores", data=scores, compression="gzip")

    @classmethod
    def load(cls, path: Path) -> "Predictions":
        predictions = cls()
        with h5py.File(path, "r") as handle:
            for dataset_name, group in handle.items():
                part = DatasetPredictions(
                    ids=np.asarray([i.decode() for i in group["ids"][()]], dtype=object),
                    labels=group["labels"][()],
                    groups=np.asarray([g.decode() for g in group["groups"][()]], dtype=object)
                    if isinstance(group.get("groups"), h5py.Dataset)
                    else None,
                )

                def collect(name: str, item: object, part: DatasetPredictions = part) -> None:
                    if isinstance(item, h5py.Dataset) and name.endswith("/scores"):
                        model, pooling, method, budget, seed = map(
                            unescape_name, name.split("/")[:-1]
                        )
                        key = (model, pooling, method, budget, int(seed.removeprefix("seed")))
                        part.scores[key] = item[()]

                group.visititems(collect)
                predictions.datasets[unescape_name(dataset_name)] = part
        return predictions
