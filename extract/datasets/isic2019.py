"""ISIC 2019 dermoscopy, training set as downloaded: 8 diagnoses, balanced accuracy headline.

    <root>/ISIC_2019_Training_Input/<image>.jpg
    <root>/ISIC_2019_Training_GroundTruth.csv    image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (one-hot)
    <root>/ISIC_2019_Training_Metadata.csv       optional: image,age_approx,anatom_site_general,
                                                 lesion_id,sex

UNK has no training images; a row marked UNK is refused. Default split 80/10/10 stratified with
seed 42, as the published studies; `split_by="patient"` keeps each lesion_id in one split. The
metadata CSV also gives each image's metadata columns (age_approx, sex, anatom_site_general).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.rows import RowTable, metadata_value
from medprobe.extract.datasets.base import ImageFilesDataset, TaskInfo, layout_error
from medprobe.extract.datasets.csv_table import (
    check_files_match,
    read_csv_table,
    refuse_duplicates,
)
from medprobe.extract.datasets.splits import stratified_split

ISIC_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
IMAGE_DIR = "ISIC_2019_Training_Input"
GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
FRACTIONS = (0.8, 0.1, 0.1)
METADATA_COLUMNS = ("age_approx", "sex", "anatom_site_general")


@dataclass
class Isic2019Dataset(ImageFilesDataset):
    """ISIC 2019 training images with their one-hot ground truth."""

    def __post_init__(self) -> None:
        if not (self.root / GROUND_TRUTH).is_file():
            raise layout_error(
                "isic2019",
                self.root,
                f"{GROUND_TRUTH} and {IMAGE_DIR}/",
                lambda folder: (folder / GROUND_TRUTH).is_file(),
            )
        table = read_csv_table(self.root / GROUND_TRUTH, ("image", *ISIC_CLASSES))
        refuse_duplicates(table.column("image"), table.places(), "image")
        ids, labels = [], []
        for line, record in table:
            try:
                values = [float(record[c]) for c in ISIC_CLASSES]
                unknown = float(record.get("UNK") or 0)
            except ValueError:
                raise ToolkitError(
                    f"{table.place(line)}: a label is not a number: {record}"
                ) from None
            if unknown == 1.0:
                raise ToolkitError(
                    f"{table.place(line)}: image {record['image']} is marked "
                    "UNK, which the 8-class task has no label for"
                )
            if sorted(values) != [0.0] * 7 + [1.0]:
                raise ToolkitError(
                    f"{table.place(line)}: labels {values} are not one-hot "
                    f"over {list(ISIC_CLASSES)}"
                )
            ids.append(f"{IMAGE_DIR}/{record['image']}.jpg")
            labels.append(values.index(1.0))
        check_files_match({Path(i).stem for i in ids}, self.root / IMAGE_DIR, ".jpg", table.path)
        labels_array = np.asarray(labels, dtype=np.int64)
        groups = self._lesions(ids)
        by_group = self.resolve_split_by("image", groups) == "patient"
        splits = stratified_split(
            labels_array, fractions=FRACTIONS, seed=self.seed, groups=groups if by_group else None
        )
        self.rows = RowTable(
            ids=ids,
            splits=splits.tolist(),
            labels=labels_array,
            groups=groups,
            metadata=self._metadata(ids),
        )
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
        for _, record in read_csv_table(metadata, ("image", "lesion_id")):
            if record["lesion_id"]:
                lesion_of[record["image"]] = record["lesion_id"]
        return [lesion_of.get(Path(i).stem, Path(i).stem) for i in ids]

    def _metadata(self, ids: list[str]) -> dict[str, list[str]] | None:
        """age_approx, sex and anatom_site_general per image from the metadata CSV (the columns
        it has; '' for an image it does not list), or None without the CSV."""
        path = self.root / METADATA
        if not path.is_file():
            return None
        table = read_csv_table(path, ("image",))
        columns = [c for c in METADATA_COLUMNS if c in table.columns]
        record_of = {record["image"]: record for _, record in table}
        return {
            column: [metadata_value(record_of.get(Path(i).stem, {}).get(column)) for i in ids]
            for column in columns
        } or None
