"""MedMNIST+ npz files, any 2D subset at any size: `<flag>.npz` or `<flag>_<size>.npz` with keys
train_images, train_labels, val_*, test_* (the official splits). The task type comes from the
subset's name, as MedMNIST's INFO lists it."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cache.errors import ToolkitError
from cache.rows import RowTable
from extract.datasets.base import ImageDataset, TaskInfo, single_file

# flag -> (task kind, number of classes or labels), from MedMNIST v2's INFO.
MEDMNIST_TASKS = {
    "pathmnist": ("multiclass", 9),
    "chestmnist": ("multilabel", 14),
    "dermamnist": ("multiclass", 7),
    "octmnist": ("multiclass", 4),
    "pneumoniamnist": ("binary", 2),
    "retinamnist": ("ordinal", 5),
    "breastmnist": ("binary", 2),
    "bloodmnist": ("multiclass", 8),
    "tissuemnist": ("multiclass", 8),
    "organamnist": ("multiclass", 11),
    "organcmnist": ("multiclass", 11),
    "organsmnist": ("multiclass", 11),
}
HEADLINE = {
    "multiclass": "accuracy",
    "binary": "roc_auc",
    "ordinal": "accuracy",
    "multilabel": "mean_auroc",
}


@dataclass
class MedMnistDataset(ImageDataset):
    """One MedMNIST+ subset; ids are `<split>/<index>` within the official splits."""

    def __post_init__(self) -> None:
        path = single_file(self.root, ".npz", "medmnist")
        flag = path.stem.split("_")[0].lower()
        if flag not in MEDMNIST_TASKS:
            raise ToolkitError(
                f"{path.name}: unknown MedMNIST subset {flag!r}; known: {sorted(MEDMNIST_TASKS)}"
            )
        kind, n_outputs = MEDMNIST_TASKS[flag]
        with np.load(path) as archive:
            missing = [
                f"{s}_{k}"
                for s in ("train", "val", "test")
                for k in ("images", "labels")
                if f"{s}_{k}" not in archive
            ]
            if missing:
                raise ToolkitError(f"{path}: missing arrays {missing}")
            self._images = {s: archive[f"{s}_images"] for s in ("train", "val", "test")}
            labels = {s: archive[f"{s}_labels"] for s in ("train", "val", "test")}
        ids, splits, label_rows, self._where = [], [], [], []
        for split in ("train", "val", "test"):
            for index in range(len(self._images[split])):
                ids.append(f"{split}/{index:06d}")
                splits.append(split)
                self._where.append((split, index))
            label_rows.append(labels[split])
        stacked = np.concatenate(label_rows)
        if kind == "multilabel":
            label_array = stacked.astype(np.int8)
        else:
            label_array = stacked.reshape(-1).astype(np.int64)
            if label_array.min() < 0 or label_array.max() >= n_outputs:
                raise ToolkitError(f"{path}: labels outside 0..{n_outputs - 1} for {flag}")
        self.root = path.parent
        self._file = path.name
        self.rows = RowTable(ids=ids, splits=splits, labels=label_array)
        self.task = TaskInfo(
            kind=kind,
            label_names=tuple(str(i) for i in range(n_outputs)),
            headline_metric=HEADLINE[kind],
        )
        self.options["file"] = path.name
        self.info["split"] = "official MedMNIST train/val/test"

    def image_path(self, row: int) -> Path | None:
        return None

    def read_image(self, row: int, *, min_side: int | None = None) -> Image.Image:
        split, index = self._where[row]
        return Image.fromarray(self._images[split][index])
