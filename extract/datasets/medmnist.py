"""MedMNIST+ npz files, any 2D subset at any size: `<flag>.npz` or `<flag>_<size>.npz` with keys
train_images, train_labels, val_*, test_* (the official splits). The task type and label names
come from the subset's name, as MedMNIST's INFO lists them; reading needs no `medmnist` package.

`--data-dir` is the npz file itself, or a folder of them with `flag` (and `size`, 28 by default)
naming one; with `download=true` a missing file is fetched into that folder first
(`medmnist_download`)."""

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medprobe.cache.errors import ToolkitError
from medprobe.cache.rows import RowTable
from medprobe.extract.datasets.base import ImageDataset, TaskInfo, files_fingerprint, single_file
from medprobe.extract.datasets.medmnist_download import download_medmnist, medmnist_file_name

# flag -> (task kind, number of classes or labels), from MedMNIST v2's INFO (a test checks
# both tables against the medmnist package's INFO).
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
LABEL_NAMES = {
    "pathmnist": ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma",
                  "colorectal adenocarcinoma epithelium"),
    "chestmnist": ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
                   "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema",
                   "fibrosis", "pleural", "hernia"),
    "dermamnist": ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma",
                   "melanocytic nevi", "vascular lesions"),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("0", "1", "2", "3", "4"),
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast",
                   "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
                   "lymphocyte", "monocyte", "neutrophil", "platelet"),
    "tissuemnist": ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                    "Glomerular endothelial cells", "Interstitial endothelial cells",
                    "Leukocytes", "Podocytes", "Proximal Tubule Segments",
                    "Thick Ascending Limb"),
}  # fmt: skip
ORGAN_LABELS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
                "liver", "lung-left", "lung-right", "pancreas", "spleen")  # fmt: skip
for _organ in ("organamnist", "organcmnist", "organsmnist"):
    LABEL_NAMES[_organ] = ORGAN_LABELS
HEADLINE = {
    "multiclass": "accuracy",
    "binary": "roc_auc",
    "ordinal": "accuracy",
    "multilabel": "mean_auroc",
}


@dataclass
class MedMnistDataset(ImageDataset):
    """One MedMNIST+ subset; ids are `<split>/<index>` within the official splits."""

    flag: str | None = None
    size: int | None = None
    download: bool = False

    def __post_init__(self) -> None:
        self.resolve_split_by("image", None)  # official splits; patient ids do not exist
        path = self._npz_file()
        flag = path.stem.split("_")[0].lower()
        if flag not in MEDMNIST_TASKS:
            raise ToolkitError(
                f"{path.name}: unknown MedMNIST subset {flag!r}; known: {sorted(MEDMNIST_TASKS)}"
            )
        kind, n_outputs = MEDMNIST_TASKS[flag]
        self._images, labels = _read_arrays(path, flag)
        ids, splits, label_rows, self._where = [], [], [], []
        for split in ("train", "val", "test"):
            for index in range(len(self._images[split])):
                ids.append(f"{split}/{index:06d}")
                splits.append(split)
                self._where.append((split, index))
            label_rows.append(labels[split])
        stacked = np.concatenate(label_rows)
        width = n_outputs if kind == "multilabel" else 1
        if stacked.ndim != 2 or stacked.shape[1] != width:
            raise ToolkitError(
                f"{path}: labels have shape {stacked.shape}; {flag} needs (n_images, {width})"
            )
        allowed = (0, 1) if kind == "multilabel" else range(n_outputs)
        bad_rows = np.flatnonzero(~np.isin(stacked, list(allowed)).all(axis=1))
        if len(bad_rows):
            bad = int(bad_rows[0])
            raise ToolkitError(
                f"{path}: row {ids[bad]} has label {stacked[bad].tolist()}; {flag} labels are "
                f"{'0/1 per finding' if kind == 'multilabel' else f'0..{n_outputs - 1}'}"
            )
        if kind == "multilabel":
            label_array = stacked.astype(np.int8)
        else:
            label_array = stacked.reshape(-1).astype(np.int64)
        self.root = path.parent
        self._file = path.name
        self.rows = RowTable(ids=ids, splits=splits, labels=label_array)
        self.task = TaskInfo(
            kind=kind,
            label_names=LABEL_NAMES[flag],
            headline_metric=HEADLINE[kind],
        )
        self.options["file"] = path.name
        self.info["flag"] = flag
        self.info["image_size"] = list(self._images["train"].shape[1:3])
        self.info["split"] = "official MedMNIST train/val/test"

    def _npz_file(self) -> Path:
        """The npz file: `root` itself, `<flag>[_<size>].npz` inside it, or its only npz; with
        `download`, a missing `<flag>[_<size>].npz` is fetched into `root`."""
        if self.flag is None or self.root.is_file():
            if self.download:
                raise ToolkitError(
                    "medmnist: download=true needs flag= (e.g. flag=pathmnist) and a folder "
                    "as --data-dir to download into"
                )
            return single_file(self.root, ".npz", "medmnist")
        if self.flag not in MEDMNIST_TASKS:
            raise ToolkitError(
                f"medmnist: unknown 2D subset flag={self.flag!r}; known: {sorted(MEDMNIST_TASKS)}"
            )
        size = self.size or 28
        names = [medmnist_file_name(self.flag, size)]
        if size == 28:
            names.append(f"{self.flag}_28.npz")  # a name some conversions use
        for name in names:
            if (self.root / name).is_file():
                return self.root / name
        if self.download:
            return download_medmnist(self.flag, size, self.root)
        present = sorted(p.name for p in self.root.glob("*.npz"))
        raise ToolkitError(
            f"medmnist: none of {names} in {self.root} (present: {present}); pass flag= and "
            "size= matching a file, the npz file itself as --data-dir, or download=true to "
            "fetch it"
        )

    def image_path(self, row: int) -> Path | None:
        return None

    def sources_fingerprint(self, rows: Sequence[int]) -> str:
        """The npz file's size and modification time: every row comes from it."""
        return files_fingerprint([self.root / self._file])

    def read_image(self, row: int, *, min_side: int | None = None) -> Image.Image:
        split, index = self._where[row]
        return Image.fromarray(self._images[split][index])


def _read_arrays(path: Path, flag: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(images, labels) per split from the npz file; a truncated or damaged download (numpy
    raises BadZipFile, EOFError, ValueError or OSError for its many ways to break) is one error
    naming the file and how to get it whole again."""
    splits = ("train", "val", "test")
    try:
        with np.load(path) as archive:
            missing = [
                f"{s}_{k}"
                for s in splits
                for k in ("images", "labels")
                if f"{s}_{k}" not in archive
            ]
            if missing:
                raise ToolkitError(f"{path}: missing arrays {missing}")
            images = {s: archive[f"{s}_images"] for s in splits}
            labels = {s: archive[f"{s}_labels"] for s in splits}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as error:
        raise ToolkitError(
            f"{path}: cannot read this npz file ({type(error).__name__}: {error}); it is "
            f"truncated or damaged: delete it and download it again (download=true with "
            f"flag={flag}, or from https://zenodo.org/records/10519652)"
        ) from error
    return images, labels
