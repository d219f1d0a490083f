"""APTOS 2019 blindness detection, training set as downloaded: 5 ordinal DR grades, QWK headline.

    <root>/train.csv                 id_code,diagnosis   (3,662 rows, grades 0-4)
    <root>/train_images/<id_code>.png

Default split 70/15/15 stratified with seed 42. Fundus PNGs are large (up to ~3000 px): they
are decoded once per pass and resized by the loader; `--cache-pixels` keeps the small version.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image

from medprobe.cache.errors import ToolkitError
from medprobe.cache.rows import RowTable
from medprobe.extract.datasets.base import ImageDataset, TaskInfo
from medprobe.extract.datasets.images import open_image
from medprobe.extract.datasets.isic2019 import check_files_match, read_csv_rows
from medprobe.extract.datasets.splits import stratified_split

APTOS_GRADES = ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")
FRACTIONS = (0.7, 0.15, 0.15)


@dataclass
class Aptos2019Dataset(ImageDataset):
    """APTOS 2019 training images with their grade (the release has no patient ids)."""

    reads_plain_files = True

    def __post_init__(self) -> None:
        table = self.root / "train.csv"
        records = read_csv_rows(table, ("id_code", "diagnosis"))
        ids, labels = [], []
        for line, record in enumerate(records, start=2):
            grade = record["diagnosis"].strip()
            if grade not in {"0", "1", "2", "3", "4"}:
                raise ToolkitError(f"{table}, line {line}: diagnosis {grade!r} is not a grade 0-4")
            ids.append(f"train_images/{record['id_code']}.png")
            labels.append(int(grade))
        check_files_match(
            {r["id_code"] for r in records}, self.root / "train_images", ".png", table
        )
        labels_array = np.asarray(labels, dtype=np.int64)
        self.resolve_split_by("image", None)
        splits = stratified_split(labels_array, fractions=FRACTIONS, seed=self.seed)
        self.rows = RowTable(ids=ids, splits=splits.tolist(), labels=labels_array)
        self.task = TaskInfo(
            kind="ordinal", label_names=APTOS_GRADES, headline_metric="quadratic_kappa"
        )
        self.options["split_seed"] = self.seed
        self.info["split"] = f"stratified {FRACTIONS}, seed {self.seed}"

    def read_image(self, row: int, *, min_side: int | None = None) -> Image.Image:
        return open_image(self.root / self.rows.ids[row], min_side=min_side)
