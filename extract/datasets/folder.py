"""Any folder of class sub-folders: `root/<class>/*.png`, or `root/{train,val,test}/<class>/*`.

The layout is read from the top-level folders: all named train/val/test means split folders, none
so named means class folders. A mix (a class folder called `test` beside `benign/`, say) is
refused naming the folders, since either reading would silently lose images or invent a class.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.rows import RowTable
from medprobe.extract.datasets.base import ImageFilesDataset, TaskInfo
from medprobe.extract.datasets.splits import SPLIT_NAMES, stratified_split

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".dcm"}
)
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(directory: Path, others: list[Path] | None = None) -> list[Path]:
    """Image files anywhere below `directory`, sorted; hidden files and folders are left out.
    Visible files of other kinds are appended to `others`, so the caller can say they were left
    out instead of dropping them silently."""
    images = []
    for path in directory.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        if not path.is_file():
            continue
        if is_image_file(path):
            images.append(path)
        elif others is not None:
            others.append(path)
    return sorted(images)


def visible_subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def loose_images(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_image_file(p) and p.is_file())


@dataclass
class FolderDataset(ImageFilesDataset):
    """Labels are the names of the class folders; a split is given by top-level split folders,
    or else drawn stratified 70/15/15 with seed 42."""

    def __post_init__(self) -> None:
        if not self.root.is_dir():
            raise ToolkitError(f"dataset folder {self.root} does not exist")
        top = visible_subfolders(self.root)
        split_dirs = [d for d in top if d.name in SPLIT_NAMES]
        if split_dirs and len(split_dirs) < len(top):
            others = [d.name for d in top if d.name not in SPLIT_NAMES]
            raise ToolkitError(
                f"folder: {self.root} mixes split folders {[d.name for d in split_dirs]} with "
                f"other folders {others[:10]}; use either <class>/<image> (rename the class "
                f"folder {split_dirs[0].name!r}) or train|val|test/<class>/<image> (move "
                f"{others[0]!r} into a split folder)"
            )
        ids: list[str] = []
        not_images: list[Path] = []
        class_of: list[str] = []
        given: list[str] = []
        for split_dir in split_dirs or [None]:
            base = split_dir or self.root
            if split_dir is not None and loose_images(split_dir):
                raise ToolkitError(
                    f"folder: {split_dir} holds images directly ({loose_images(split_dir)[:3]}); "
                    "in the split layout each split folder holds class folders, and a class "
                    "may not be named train, val or test"
                )
            for class_dir in visible_subfolders(base):
                for path in list_images(class_dir, not_images):
                    ids.append(path.relative_to(self.root).as_posix())
                    class_of.append(class_dir.name)
                    given.append(split_dir.name if split_dir else "")
        if not_images:
            logger.warning(
                "folder: %d file(s) in class folders are not images (suffixes %s) and are left "
                "out, e.g. %s",
                len(not_images),
                sorted({p.suffix.lower() or "(none)" for p in not_images})[:8],
                [p.relative_to(self.root).as_posix() for p in sorted(not_images)[:3]],
            )
        left_out = loose_images(self.root)
        if left_out:
            logger.warning(
                "folder: %d image(s) directly in %s belong to no class folder and are left "
                "out, e.g. %s",
                len(left_out),
                self.root,
                left_out[:3],
            )
        if not ids:
            raise ToolkitError(
                f"folder: no images under {self.root}; expected <class>/<image> or "
                f"<split>/<class>/<image> with suffixes {sorted(IMAGE_SUFFIXES)}"
            )
        label_names = tuple(sorted(set(class_of)))
        if len(label_names) == 1:
            depth = 2 if split_dirs else 1  # <split>/<class> or <class>
            self._check_one_class(self.root.joinpath(*Path(ids[0]).parts[:depth]))
        labels = np.array([label_names.index(c) for c in class_of], dtype=np.int64)
        if split_dirs:
            splits = np.array(given, dtype=str)
            names = ", ".join(d.name for d in split_dirs)
            self.info["split"] = f"given by split folders {names} (<split>/<class>/<image>)"
        else:
            self.resolve_split_by("image", None)
            splits = stratified_split(labels, fractions=DEFAULT_FRACTIONS, seed=self.seed)
            self.info["split"] = (
                f"class folders (<class>/<image>), stratified {DEFAULT_FRACTIONS}, seed {self.seed}"
            )
            self.options["split_seed"] = self.seed
        self.rows = RowTable(ids=ids, splits=splits.tolist(), labels=labels)
        kind = "binary" if len(label_names) == 2 else "multiclass"
        self.task = TaskInfo(kind=kind, label_names=label_names, headline_metric="accuracy")

    def _check_one_class(self, class_dir: Path) -> None:
        """One class whose folder holds class-like folders is a --data-dir one level too high:
        refused, naming the folder meant. One class of loose images is only warned about."""
        inner = [d for d in visible_subfolders(class_dir) if any(map(is_image_file, d.iterdir()))]
        if len(inner) >= 2:
            raise ToolkitError(
                f"folder: {self.root} holds one class folder, {class_dir.name!r}, whose own "
                f"folders {[d.name for d in inner[:5]]} look like the classes; did you mean "
                f"--data-dir {class_dir}?"
            )
        logger.warning("folder: %s holds one class only (%s)", self.root, class_dir.name)
