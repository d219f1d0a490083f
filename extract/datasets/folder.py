"""Any folder of class sub-folders: `root/<class>/*.png`, or `root/{train,val,test}/<class>/*`."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medprobe.cache.errors import ToolkitError
from medprobe.cache.rows import RowTable
from medprobe.extract.datasets.base import ImageDataset, TaskInfo
from medprobe.extract.datasets.images import open_image
from medprobe.extract.datasets.splits import SPLIT_NAMES, stratified_split

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm"})
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


def list_images(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


@dataclass
class FolderDataset(ImageDataset):
    """Labels are the names of the class folders; a split is given by top-level split folders,
    or else drawn stratified 70/15/15 with seed 42."""

    reads_plain_files = True

    def __post_init__(self) -> None:
        if not self.root.is_dir():
            raise ToolkitError(f"dataset folder {self.root} does not exist")
        split_dirs = [s for s in SPLIT_NAMES if (self.root / s).is_dir()]
        ids: list[str] = []
        class_of: list[str] = []
        given: list[str] = []
        for split in split_dirs or [None]:
            base = self.root / split if split else self.root
            for class_dir in sorted(p for p in base.iterdir() if p.is_dir()):
                for path in list_images(class_dir):
                    ids.append(path.relative_to(self.root).as_posix())
                    class_of.append(class_dir.name)
                    given.append(split or "")
        if not ids:
            raise ToolkitError(
                f"no images under {self.root}; expected <class>/<image> or <split>/<class>/<image> "
                f"with suffixes {sorted(IMAGE_SUFFIXES)}"
            )
        label_names = tuple(sorted(set(class_of)))
        labels = np.array([label_names.index(c) for c in class_of], dtype=np.int64)
        if split_dirs:
            splits = np.array(given, dtype=str)
            self.info["split"] = f"given by folders {split_dirs}"
        else:
            self.resolve_split_by("image", None)
            splits = stratified_split(labels, fractions=DEFAULT_FRACTIONS, seed=self.seed)
            self.info["split"] = f"stratified {DEFAULT_FRACTIONS}, seed {self.seed}"
            self.options["split_seed"] = self.seed
        self.rows = RowTable(ids=ids, splits=splits.tolist(), labels=labels)
        kind = "binary" if len(label_names) == 2 else "multiclass"
        self.task = TaskInfo(kind=kind, label_names=label_names, headline_metric="accuracy")

    def read_image(self, row: int, *, min_side: int | None = None) -> Image.Image:
        return open_image(self.root / self.rows.ids[row], min_side=min_side)
