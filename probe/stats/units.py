"""Scoring per study or per patient (`aggregate=`): each unit's image probabilities pooled (mean,
or max) into one prediction before the test set is scored, as CheXpert's official evaluation
scores studies and a CBIS-DDSM lesion is seen in a CC and an MLO view.

An image without a unit (no study recorded) is a unit of its own. A unit's label: binary and
multi-label, positive when any image is (a lesion is malignant if any view shows it); multiclass
and ordinal, the one label its images share (a unit mixing classes is refused).
"""

from dataclasses import dataclass

import numpy as np

from medprobe.cache.errors import ToolkitError

AGGREGATE_UNITS = ("study", "patient")
AGGREGATE_POOLS = ("mean", "max")


def parse_aggregate(value: str | None) -> str | None:
    """'study' | 'patient', optionally ':mean' (default) or ':max' -> 'unit:pool', or None."""
    if value is None or value == "":
        return None
    unit, _, pool = str(value).partition(":")
    pool = pool or "mean"
    if unit not in AGGREGATE_UNITS or pool not in AGGREGATE_POOLS:
        raise ToolkitError(
            f"aggregate={value!r}: one of {list(AGGREGATE_UNITS)}, optionally with ':mean' "
            f"(default) or ':max', e.g. 'study:max'",
            argument="aggregate",
        )
    return f"{unit}:{pool}"


@dataclass(frozen=True)
class Units:
    """The test images grouped into units. of_image (N,) int64 unit of each image; ids (U,) str
    (the unit's name, or the image id for an image of its own); first (U,) int64 the first image
    of each unit (its patient stands for the unit's in resampling)."""

    of_image: np.ndarray
    ids: np.ndarray
    first: np.ndarray
    pool: str

    def __len__(self) -> int:
        return len(self.ids)

    def labels(self, labels: np.ndarray, kind: str) -> np.ndarray:
        """(U,) or (U, L) unit labels from image labels (multi-label: -1 unknown kept unknown
        only where every image of the unit is unknown)."""
        if kind in ("binary", "multilabel"):
            shape = (len(self), *labels.shape[1:])
            pooled = np.full(shape, -1, dtype=labels.dtype)
            np.maximum.at(pooled, self.of_image, labels)
            return pooled
        pooled = labels[self.first]
        mixed = np.flatnonzero(pooled[self.of_image] != labels)
        if len(mixed):
            unit = self.ids[self.of_image[mixed[0]]]
            raise ToolkitError(
                f"aggregate: unit {unit!r} holds images of different classes, so it has no one "
                "label; aggregate by a unit whose images share their label, or not at all",
                argument="aggregate",
            )
        return pooled

    def scores(self, scores: np.ndarray, kind: str) -> np.ndarray:
        """(U, K) pooled class probabilities (rows still sum to 1), or (U, L) for multi-label."""
        scores = np.asarray(scores, dtype=np.float64)
        if kind != "multilabel" and scores.shape[1] == 2:
            positive = self._pool(scores[:, 1:2])
            return np.hstack([1 - positive, positive])
        pooled = self._pool(scores)
        if kind != "multilabel" and self.pool == "max":
            pooled /= pooled.sum(1, keepdims=True)
        return pooled

    def _pool(self, values: np.ndarray) -> np.ndarray:
        if self.pool == "max":
            pooled = np.full((len(self), values.shape[1]), -np.inf)
            np.maximum.at(pooled, self.of_image, values)
            return pooled
        sums = np.zeros((len(self), values.shape[1]))
        np.add.at(sums, self.of_image, values)
        return sums / np.bincount(self.of_image, minlength=len(self))[:, None]

    def collapse(self, values: np.ndarray) -> np.ndarray:
        """(U,) str: a per-image value (metadata, '' missing) where all of a unit's images agree,
        else '' (a study's frontal and lateral views have no one view)."""
        values = np.asarray(values, dtype=object).astype(str)
        pooled = values[self.first].astype(object)
        differs = values != pooled[self.of_image]
        pooled[np.unique(self.of_image[differs])] = ""
        return pooled


def make_units(image_ids: np.ndarray, unit_of: np.ndarray, pool: str) -> Units:
    """Units from each image's unit name (N,) str, '' for an image that is a unit of its own."""
    unit_of = np.asarray(unit_of, dtype=object).astype(str)
    names = np.where(unit_of == "", np.asarray(image_ids, dtype=object).astype(str), unit_of)
    ids, first, of_image = np.unique(names, return_index=True, return_inverse=True)
    return Units(of_image.astype(np.int64), ids.astype(object), first.astype(np.int64), pool)
