"""A CSV list of images: header `path,label[,split][,group]`, paths absolute or CSV-relative.

Labels are read by one rule (docs/datasets.md): a label that reads as a number is that number,
so `1`, `1.0`, `01` and `+1` are one class, named `1`, and numeric classes sort by value; any
other label is its text. A missing label (empty, `NaN`, `NA`, `null`, …: pandas' missing-value
markers) and two labels that differ only in letter case are refused, naming the lines. Paths are
resolved before they are compared, so one image listed twice (also once relative, once absolute,
or through a symlink) is refused naming both lines.
"""

import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.rows import RowTable, metadata_value
from medprobe.extract.datasets.base import ImageFilesDataset, TaskInfo, single_file
from medprobe.extract.datasets.csv_table import (
    MISSING_VALUES,
    CsvTable,
    read_csv_table,
    refuse_duplicates,
)
from medprobe.extract.datasets.splits import SPLIT_NAMES, stratified_split

DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
REQUIRED_COLUMNS = ("path", "label")


def _number(text: str) -> Decimal | None:
    """The finite number `text` spells in plain ASCII, or None (Decimal alone would also take
    '1_0', 'Infinity' and non-ASCII digits)."""
    if "_" in text or not text.isascii():
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def class_name(label: str) -> str:
    """The class a label text names: a number's canonical form (`1.0` -> `1`, `0.50` -> `0.5`),
    else the text itself."""
    value = _number(label)
    if value is None:
        return label
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def class_order(name: str) -> tuple[int, Decimal, str]:
    """Numeric classes first, by value; then the others, alphabetically."""
    value = _number(name)
    return (1, Decimal(0), name) if value is None else (0, value, "")


def read_labels(table: CsvTable) -> tuple[tuple[str, ...], np.ndarray]:
    """(class names, (N,) int64 class index per record) under the rule in the module docstring."""
    names: list[str] = []
    first_line: dict[str, int] = {}
    for line, record in table:
        text = record["label"]
        if text in MISSING_VALUES:
            raise ToolkitError(
                f"{table.place(line)}: label {text!r} is missing; give every image a label, "
                "or remove the line"
            )
        name = class_name(text)
        names.append(name)
        first_line.setdefault(name, line)
    by_case: dict[str, list[str]] = {}
    for name in first_line:
        by_case.setdefault(name.casefold(), []).append(name)
    for spellings in by_case.values():
        if len(spellings) > 1:
            where = ", ".join(f"{n!r} (line {first_line[n]})" for n in spellings)
            raise ToolkitError(
                f"{table.path}: labels {where} differ only in letter case; write one spelling"
            )
    label_names = tuple(sorted(first_line, key=class_order))
    index = {name: i for i, name in enumerate(label_names)}
    return label_names, np.array([index[n] for n in names], dtype=np.int64)


@dataclass
class CsvDataset(ImageFilesDataset):
    """Labels by the rule above; the split is the `split` column when present (train/val/test),
    else stratified 70/15/15 with seed 42 (grouped by `group` when that column exists, unless
    split_by=image). `metadata` names further columns to keep as per-image metadata
    ('sex,age'); they stay out of the store key."""

    metadata: str = ""

    def __post_init__(self) -> None:
        list_file = single_file(self.root, ".csv", "csv")
        self.root = list_file.parent
        table = read_csv_table(list_file, REQUIRED_COLUMNS)
        if not table.records:
            raise ToolkitError(f"{list_file}: no rows below the header")
        columns = table.columns
        ids, resolved, places, given_splits, groups = [], [], [], [], []
        for line, record in table:
            path_text = record["path"]
            if not path_text:
                raise ToolkitError(f"{table.place(line)}: empty path")
            ids.append(self._image_id(path_text))
            resolved.append(os.path.realpath(self.root / path_text))
            places.append(table.place(line))
            split = record.get("split", "")
            if "split" in columns and split not in SPLIT_NAMES:
                raise ToolkitError(
                    f"{table.place(line)}: split {split!r} is not one of {list(SPLIT_NAMES)}"
                )
            given_splits.append(split)
            groups.append(record.get("group", "") or f"row{line}")
        refuse_duplicates(resolved, places, "image")
        label_names, labels = read_labels(table)
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
            ids=ids,
            splits=splits,
            labels=labels,
            groups=groups if has_groups else None,
            metadata=self._metadata(table),
        )
        kind = "binary" if len(label_names) == 2 else "multiclass"
        self.task = TaskInfo(kind=kind, label_names=label_names)
        self.info["list_file"] = list_file.name

    def _metadata(self, table: CsvTable) -> dict[str, list[str]] | None:
        """The columns named by `metadata`, one value per record ('' where missing)."""
        names = [n.strip() for n in str(self.metadata).split(",") if n.strip()]
        absent = [n for n in names if n not in table.columns]
        if absent:
            raise ToolkitError(
                f"metadata={self.metadata!r}: {table.path.name} has no column(s) {absent}; it "
                f"has {list(table.columns)}"
            )
        if names:
            self.info["metadata"] = names
        return {n: [metadata_value(r.get(n)) for _, r in table] for n in names} or None

    def _image_id(self, path_text: str) -> str:
        """The path relative to the CSV's folder when it lies inside it (written absolute or
        not), else as written; normalised (`./a/../b.png` is `b.png`)."""
        path = Path(os.path.normpath(path_text))
        if path.is_absolute():
            root = Path(os.path.abspath(self.root))
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return path.as_posix()
