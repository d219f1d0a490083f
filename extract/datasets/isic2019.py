"""ISIC 2019 dermoscopy, training set as downloaded: 8 diagnoses, balanced accuracy headline.

    <root>/ISIC_2019_Training_Input/<image>.jpg
    <root>/ISIC_2019_Training_GroundTruth.csv    image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (one-hot)
    <root>/ISIC_2019_Training_Metadata.csv       optional: image,...,lesion_id,...

UNK has no training images; a row marked UNK is refused. Default split 80/10/10 stratified with
seed 42, as the published studies; `split_by="patient"` keeps each lesion_id in one split.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medprobe.cache.errors import ToolkitError
from medprobe.cache.rows import RowTable
from medprobe.extract.datasets.base import ImageDataset, TaskInfo
from medprobe.extract.datasets.images import open_image
from medprobe.extract.datasets.splits import stratified_split

ISIC_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
IMAGE_DIR = "ISIC_2019_Training_Input"
GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
FRACTIONS = (0.8, 0.1, 0.1)


def read_csv_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV whose header must contain `required`; errors name the file and columns."""
    if not path.is_file():
        raise ToolkitError(f"{path} is missing; expected the official layout (see docs)")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ToolkitError(
                f"{path}: missing column(s) {missing}; header is {reader.fieldnames}"
            )
        return list(reader)


def check_files_match(listed: set[str], image_dir: Path, suffix: str, table: Path) -> None:
    """Every listed image exists and every image present is listed; name what is not."""
    present = {p.stem for p in image_dir.glob(f"*{suffix}")}
    absent, unlisted = sorted(listed - present), sorted(present - listed)
    if absent:
        raise ToolkitError(
            f"{len(absent)} image(s) listed in {table.name} are not in {image_dir}: {absent[:5]}"
        )
    if unlisted:
        raise ToolkitError(
            f"{len(unlisted)} image(s) in {image_dir} are not listed in "
            f"{table.name}: {unlisted[:5]}"
        )


@dataclass
class Isic2019Dataset(ImageDataset):
    """ISIC 2019 training images with their one-hot ground truth."""

    reads_plain_files = True

    def __post_init__(self) -> None:
        table = self.root / GROUND_TRUTH
        records = read_csv_rows(table, ("image", *ISIC_CLASSES))
        ids, labels = [], []
        for line, record in enumerate(records, start=2):
            try:
                values = [float(record[c]) for c in ISIC_CLASSES]
                unknown = float(record.get("UNK") or 0)
            except ValueError:
                raise ToolkitError(
                    f"{table}, line {line}: a label is not a number: {record}"
                ) from None
            if unknown == 1.0:
                raise ToolkitError(
                    f"{table}, line {line}: image {record['image']} is marked "
                    "UNK, which the 8-class task has no label for"
                )
            if sorted(values) != [0.0] * 7 + [1.0]:
                raise ToolkitError(
                    f"{table}, line {line}: labels {values} are not one-hot "
                    f"over {list(ISIC_CLASSES)}"
                )
            ids.append(f"{IMAGE_DIR}/{record['image']}.jpg")
            labels.append(values.index(1.0))
        check_files_match({Path(i).stem for i in ids}, self.root / IMAGE_DIR, ".jpg", table)
        labels_array = np.asarray(labels, dtype=np.int64)
        groups = self._lesions(ids)
        by_group = self.resolve_split_by("image", groups) == "patient"
        splits = stratified_split(
            labels_array, fractions=FRACTIONS, seed=self.seed, groups=groups if by_group else None
        )
        self.rows = RowTable(ids=ids, splits=splits.tolist(), labels=labels_array, groups=groups)
        self.task = TaskInfo(
            kind="multiclass", label_names=ISIC_CLASSES, headline_metric="balanced_accuracy"
        )
        self.options.update(split_by=self.info["split_by"], split_seed=self.seed)
        self.info["split"] = f"stratified {FRACTIONS}, seed {self.seed}" + (
            ", grouped by lesion_id" if by_group else ""
        )

    def _lesions(self, ids: list[str]) -> list[str] | None:
        """lesion_id per image from the metadata CSV (the image itself where it has none), or
        None without the metadata CSV."""
        metadata = self.root / METADATA
        if not metadata.is_file():
            return None
        lesion_of: dict[str, str] = {}
        for record in read_csv_rows(metadata, ("image", "lesion_id")):
            if record["lesion_id"]:
                lesion_of[record["image"]] = record["lesion_id"]
        return [lesion_of.get(Path(i).stem, Path(i).stem) for i in ids]

    def read_image(self, row: int, *, min_side: int | None = None) -> Image.Image:
        return open_image(self.root / self.rows.ids[row], min_side=min_side)
