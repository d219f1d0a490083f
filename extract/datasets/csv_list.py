"""A CSV list of images: header `path,label[,split][,group]`, paths absolute or CSV-relative."""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medprobe.cache.errors import ToolkitError
from medprobe.cache.rows import RowTable
from medprobe.extract.datasets.base import ImageDataset, TaskInfo, single_file
from medprobe.extract.datasets.images import open_image
from medprobe.extract.datasets.splits import SPLIT_NAMES, stratified_split

DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
REQUIRED_COLUMNS = ("path", "label")


@dataclass
class CsvDataset(ImageDataset):
    """Labels are the `label` column's distinct values, sorted; the split is the `split` column
    when present (train/val/test), else stratified 70/15/15 with seed 42 (grouped by `group`
    when that column exists, unless split_by=image)."""

    reads_plain_files = True

    def __post_init__(self) -> None:
        list_file = single_file(self.root, ".csv", "csv")
        self.root = list_file.parent
        with open(list_file, newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise ToolkitError(
                    f"{list_file}: header {columns} lacks column(s) {missing}; "
                    "expected path,label[,split][,group]"
                )
            records = list(reader)
        if not records:
            raise ToolkitError(f"{list_file}: no rows below the header")
        ids, label_values, given_splits, groups = [], [], [], []
        for line, record in enumerate(records, start=2):
            path_text, label = (record["path"] or "").strip(), (record["label"] or "").strip()
            if not path_text or not label:
                raise ToolkitError(f"{list_file}, line {line}: empty path or label ({record})")
            path = Path(path_text)
            ids.append(path.as_posix() if path.is_absolute() else Path(path_text).as_posix())
            label_values.append(label)
            split = (record.get("split") or "").strip()
            if "split" in columns and split not in SPLIT_NAMES:
                raise ToolkitError(
                    f"{list_file}, line {line}: split {split!r} is not one of {list(SPLIT_NAMES)}"
                )
            given_splits.append(split)
            groups.append((record.get("group") or "").strip() or f"row{line}")
        label_names = tuple(sorted(set(label_values)))
        labels = np.array([label_names.index(v) for v in label_values], dtype=np.int64)
        has_groups = "group" in columns
        if "split" in columns:
            splits = given_splits
            self.info["split"] = f"given by the split column of {list_file.name}"
        else:
            split_by = self.resolve_split_by(
                "patient" if has_groups else "image", groups if has_groups else None
            )
            splits = stratified_split(
                labels,
                fractions=DEFAULT_FRACTIONS,
                seed=self.seed,
                groups=groups if split_by == "patient" else None,
            ).tolist()
            self.info["split"] = f"stratified {DEFAULT_FRACTIONS}, seed {self.seed}" + (
                ", grouped by the group column" if split_by == "patient" else ""
            )
            self.options["split_seed"] = self.seed
        self.rows = RowTable(
            ids=ids, splits=splits, labels=labels, groups=groups if has_groups else None
        )
        kind = "binary" if len(label_names) == 2 else "multiclass"
        self.task = TaskInfo(kind=kind, label_names=label_names)
        self.info["list_file"] = list_file.name

    def read_image(self, row: int, *, min_side: int | None = None) -> Image.Image:
        return open_image(self.root / self.rows.ids[row], min_side=min_side)
