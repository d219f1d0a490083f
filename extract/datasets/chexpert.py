"""CheXpert (full or -small) as downloaded: 14 observations, multi-label, mean AUROC headline.

    <root>/train.csv, <root>/valid.csv     Path,Sex,Age,Frontal/Lateral,AP/PA,<14 observations>
    <root>/train/patient00001/study1/view1_frontal.jpg …

`Path` starts with the download's folder name (CheXpert-v1.0-small/train/…); ids drop it, so
they are relative to <root>. Labels are 1.0, 0.0, -1.0 (uncertain) or blank (not mentioned,
read as 0). Uncertain labels follow `uncertain`: "zeros" (default, as the published studies),
"ones", or "ignore" (masked out of training and scoring). The official train set is used for
training with 10% of its patients carved out as val (seed 42); the official valid set is the
test set. Patients never straddle splits. Metadata per image: sex, age, view (Frontal/Lateral),
projection (AP/PA) and study (`patientN/studyM`, the unit CheXpert's official evaluation scores).
"""

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.rows import RowTable, metadata_value
from medprobe.extract.datasets.base import ImageFilesDataset, TaskInfo, layout_error
from medprobe.extract.datasets.csv_table import read_csv_table, refuse_duplicates
from medprobe.extract.datasets.splits import stratified_split

CHEXPERT_LABELS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
COMPETITION_LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
# Blank means "not mentioned in the report", read as negative, as the CheXpert paper does.
LABEL_CODES = {"": 0, "0": 0, "0.0": 0, "1": 1, "1.0": 1, "-1": -1, "-1.0": -1}
VAL_FRACTION = 0.1
PATIENT = re.compile(r"(patient\d+)")
STUDY = re.compile(r"(patient\d+/study\d+)")
# metadata column -> the CSV column it comes from (absent columns are left out)
METADATA_COLUMNS = {"sex": "Sex", "age": "Age", "view": "Frontal/Lateral", "projection": "AP/PA"}
TABLES = (("train.csv", "train"), ("valid.csv", "test"))


def holds_chexpert(folder: Path) -> bool:
    return all((folder / name).is_file() for name, _ in TABLES)


@dataclass
class CheXpertDataset(ImageFilesDataset):
    """CheXpert's train.csv (train and carved val) and valid.csv (test)."""

    uncertain: str = "zeros"
    frontal_only: bool = False

    def __post_init__(self) -> None:
        if self.uncertain not in UNCERTAIN_POLICIES:
            raise ToolkitError(
                f"uncertain={self.uncertain!r}: choose one of {list(UNCERTAIN_POLICIES)}"
            )
        if not holds_chexpert(self.root):
            raise layout_error(
                "chexpert",
                self.root,
                "train.csv and valid.csv (with train/ and valid/ beside them)",
                holds_chexpert,
            )
        ids, labels, masks, groups, official, places = [], [], [], [], [], []
        metadata: dict[str, list[str]] = {name: [] for name in (*METADATA_COLUMNS, "study")}
        for table_name, split in TABLES:
            table = read_csv_table(
                self.root / table_name, ("Path", "Frontal/Lateral", *CHEXPERT_LABELS)
            )
            for line, record in table:
                if self.frontal_only and record["Frontal/Lateral"] != "Frontal":
                    continue
                image_id = PurePosixPath(*PurePosixPath(record["Path"]).parts[1:]).as_posix()
                patient = PATIENT.search(record["Path"])
                if patient is None:
                    raise ToolkitError(
                        f"{table.place(line)}: no patient id in Path {record['Path']!r}"
                    )
                row, known = self._labels(record, table.place(line))
                places.append(table.place(line))
                ids.append(image_id)
                labels.append(row)
                masks.append(known)
                groups.append(patient.group(1))
                official.append(split)
                for name, column in METADATA_COLUMNS.items():
                    metadata[name].append(metadata_value(record.get(column)))
                study = STUDY.search(record["Path"])
                metadata["study"].append(study.group(1) if study else "")
        refuse_duplicates(ids, places, "image")
        absent = [i for i in ids if not (self.root / i).is_file()]
        if absent:
            raise ToolkitError(
                f"{len(absent)} image(s) listed in train.csv/valid.csv are not "
                f"under {self.root}: {absent[:5]}"
            )
        splits = np.asarray(official, dtype=object)
        by_patient = self.resolve_split_by("patient", groups) == "patient"
        train = np.flatnonzero(splits == "train")
        if by_patient:
            test_patients = {groups[i] for i in np.flatnonzero(splits == "test")}
            straddling = sorted({groups[i] for i in train} & test_patients)
            if straddling:
                raise ToolkitError(
                    f"{self.root}: patient(s) {straddling[:5]} appear in both train.csv and "
                    "valid.csv, so split_by=patient cannot hold; use split_by=image"
                )
        carved = stratified_split(
            np.zeros(len(train), dtype=np.int64),
            fractions=(1 - VAL_FRACTION, VAL_FRACTION, 0.0),
            seed=self.seed,
            groups=[groups[i] for i in train] if by_patient else None,
        )
        splits[train] = carved
        self.rows = RowTable(
            ids=ids,
            splits=splits.astype(str).tolist(),
            labels=np.asarray(labels, dtype=np.int8),
            label_mask=np.asarray(masks, dtype=bool),
            groups=groups,
            metadata={name: values for name, values in metadata.items() if any(values)} or None,
        )
        self.task = TaskInfo(
            kind="multilabel",
            label_names=CHEXPERT_LABELS,
            headline_metric="mean_auroc",
            competition_labels=COMPETITION_LABELS,
        )
        self.options.update(
            uncertain=self.uncertain, frontal_only=self.frontal_only, split_seed=self.seed
        )
        unit = "patients" if by_patient else "images"
        self.info["split"] = (
            f"official train ({1 - VAL_FRACTION:.0%} of its {unit}) / val "
            f"({VAL_FRACTION:.0%} of train {unit}, seed {self.seed}) / "
            "official valid as test"
        )

    def _labels(self, record: dict[str, str], place: str) -> tuple[list, list]:
        values, known = [], []
        for name in CHEXPERT_LABELS:
            text = record[name]
            if text not in LABEL_CODES:
                raise ToolkitError(f"{place}: {name} = {text!r}; expected 1.0, 0.0, -1.0 or blank")
            code = LABEL_CODES[text]
            if code == -1:  # uncertain
                values.append(1 if self.uncertain == "ones" else 0)
                known.append(self.uncertain != "ignore")
            else:
                values.append(code)
                known.append(True)
        return values, known
