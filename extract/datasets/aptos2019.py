"""APTOS 2019 blindness detection, training set as downloaded: 5 ordinal DR grades, QWK headline.

    <root>/train.csv                 id_code,diagnosis   (3,662 rows, grades 0-4)
    <root>/train_images/<id_code>.png

Default split 70/15/15 stratified with seed 42. Fundus PNGs are large (up to ~3000 px): they
are decoded once per pass and resized by the loader; `--cache-pixels` keeps the small version.
"""

from dataclasses import dataclass

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.rows import RowTable
from medprobe.extract.datasets.base import ImageFilesDataset, TaskInfo, layout_error
from medprobe.extract.datasets.csv_table import (
    check_files_match,
    read_csv_table,
    refuse_duplicates,
)
from medprobe.extract.datasets.splits import stratified_split

APTOS_GRADES = ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")
FRACTIONS = (0.7, 0.15, 0.15)
TABLE = "train.csv"
IMAGE_DIR = "train_images"


@dataclass
class Aptos2019Dataset(ImageFilesDataset):
    """APTOS 2019 training images with their grade (the release has no patient ids)."""

    def __post_init__(self) -> None:
        if not (self.root / TABLE).is_file():
            raise layout_error(
                "aptos2019",
                self.root,
                f"{TABLE} and {IMAGE_DIR}/",
                lambda folder: (folder / TABLE).is_file() and (folder / IMAGE_DIR).is_dir(),
            )
        table = read_csv_table(self.root / TABLE, ("id_code", "diagnosis"))
        refuse_duplicates(table.column("id_code"), table.places(), "id_code")
        ids, labels = [], []
        for line, record in table:
            grade = record["diagnosis"]
            if grade not in {"0", "1", "2", "3", "4"}:
                raise ToolkitError(f"{table.place(line)}: diagnosis {grade!r} is not a grade 0-4")
            ids.append(f"{IMAGE_DIR}/{record['id_code']}.png")
            labels.append(int(grade))
        check_files_match(set(table.column("id_code")), self.root / IMAGE_DIR, ".png", table.path)
        labels_array = np.asarray(labels, dtype=np.int64)
        self.resolve_split_by("image", None)
        splits = stratified_split(labels_array, fractions=FRACTIONS, seed=self.seed)
        self.rows = RowTable(ids=ids, splits=splits.tolist(), labels=labels_array)
        self.task = TaskInfo(
            kind="ordinal", label_names=APTOS_GRADES, headline_metric="quadratic_kappa"
        )
        self.options["split_seed"] = self.seed
        self.info["split"] = f"stratified {FRACTIONS}, seed {self.seed}"
