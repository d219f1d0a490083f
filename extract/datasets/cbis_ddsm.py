"""CBIS-DDSM mammography as downloaded: benign / malignant pathology, ROC-AUC headline.

Two layouts are read, both with the four official case-description CSVs
(`{mass,calc}_case_description_{train,test}_set.csv`, columns `patient_id`, `pathology`,
`image file path`, `cropped image file path`, `ROI mask file path`, …):

TCIA (DICOM, as the NBIA Data Retriever writes it; the CSVs beside or above the tree):

    <root>/*_case_description_*_set.csv
    <root>[/CBIS-DDSM]/Mass-Training_P_00001_LEFT_CC/<study>/<series>/1-1.dcm

  The CSV paths read `<subject>/<StudyInstanceUID>/<SeriesInstanceUID>/000000.dcm`, but the
  retriever names study and series folders descriptively (`07-20-2016-DDSM-74994`,
  `1.000000-full mammogram images-24515`: the UID's last 5 digits at the end) and files `1-1.dcm`.
  A CSV path is used as is when it exists; else its subject folder is searched for the series
  folder named by the full UID or ending in the UID's last 5 digits. What cannot be matched is
  listed in one error.

Kaggle JPEG conversion (`cbis-ddsm-breast-cancer-image-dataset`):

    <root>/csv/*_case_description_*_set.csv, <root>/csv/dicom_info.csv
    <root>/jpeg/<SeriesInstanceUID>/1-1.jpg

  `dicom_info.csv` maps each series (its `image_path` folder, `SeriesDescription`) to a JPEG.

Tasks: whole image (default), one row per full mammogram, malignant if any abnormality on it is
MALIGNANT (BENIGN and BENIGN_WITHOUT_CALLBACK are benign); `roi=True`, one row per abnormality,
its cropped image. (`task` names the label semantics on every dataset, hence `roi`.)
`abnormality` keeps "both" (default), "mass" or "calc" cases. CBIS-DDSM's crop and mask paths
are swapped in some CSV rows, so the crop is found among both series' files as the smaller image
(the mask has the mammogram's size). DICOM is 16-bit: `window="percentile"` (default) maps the
0.5-99.5 percentiles of each image to 0-255 (the files carry no window meant for a model);
`window="stored"` uses a stored VOI window where a file has one. Split: official train/test; val
is 10% of the train patients, stratified, seed 42. `split_by="patient"` (default) also leaves
out of train any patient of the official test set, so no patient straddles splits;
`split_by="image"` keeps the official split as is and carves val by image.

Metadata per image from the same CSVs: density (`breast_density` / `breast density`), side
(LEFT/RIGHT), view (CC/MLO), abnormality (mass/calcification; values an image has several of are
joined with '+'), and study: patient, side and abnormality kind (with the abnormality id for
`roi=True`), so a lesion's CC and MLO images are one unit for `--aggregate study`.
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.cache.rows import RowTable, metadata_value
from medprobe.extract.datasets.base import ImageFilesDataset, TaskInfo, layout_error
from medprobe.extract.datasets.csv_table import read_csv_table
from medprobe.extract.datasets.images import DICOM_WINDOWS
from medprobe.extract.datasets.splits import stratified_split

logger = logging.getLogger(__name__)

CASE_TABLES = tuple(
    (f"{kind}_case_description_{split}_set.csv", kind, official)
    for kind in ("mass", "calc")
    for split, official in (("train", "train"), ("test", "test"))
)
CASE_COLUMNS = (
    "patient_id",
    "pathology",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
)
PATHOLOGIES = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
LABEL_NAMES = ("benign", "malignant")
ABNORMALITIES = ("both", "mass", "calc")
VAL_FRACTION = 0.1
DICOM_INFO = "dicom_info.csv"
# The NBIA retriever ends a descriptive folder name with the UID's last 5 digits.
UID_TAIL = 5
_UID_TAIL_NAME = re.compile(r"-(\d+)$")
# metadata column -> the case-table columns it may come from (mass and calc spell density apart)
METADATA_COLUMNS = {
    "density": ("breast_density", "breast density"),
    "side": ("left or right breast",),
    "view": ("image view",),
    "abnormality": ("abnormality type",),
}


def holds_case_tables(folder: Path) -> bool:
    """Whether `folder` holds the case-description CSVs (TCIA) or csv/dicom_info.csv (JPEG)."""
    return (folder / "csv" / DICOM_INFO).is_file() or any(
        (folder / name).is_file() for name, _, _ in CASE_TABLES
    )


@dataclass
class CbisDdsmDataset(ImageFilesDataset):
    """CBIS-DDSM, TCIA DICOM tree or Kaggle JPEG conversion, whole-image or ROI task."""

    roi: bool = False
    abnormality: str = "both"
    window: str = "percentile"

    def __post_init__(self) -> None:
        for option, value, allowed in (
            ("abnormality", self.abnormality, ABNORMALITIES),
            ("window", self.window, DICOM_WINDOWS),
        ):
            if value not in allowed:
                raise ToolkitError(f"cbis_ddsm: {option}={value!r}; choose one of {list(allowed)}")
        if not holds_case_tables(self.root):
            raise layout_error(
                "cbis_ddsm",
                self.root,
                "*_case_description_*_set.csv (the TCIA layout, CSVs beside the DICOM tree) or "
                f"csv/{DICOM_INFO} (the JPEG conversion, csv/ and jpeg/)",
                holds_case_tables,
            )
        csv_dir = self.root / "csv" if (self.root / "csv" / DICOM_INFO).is_file() else self.root
        resolver: _Resolver = (
            _JpegResolver(self.root, csv_dir / DICOM_INFO)
            if csv_dir != self.root
            else _TciaResolver(self.root)
        )
        tables = [
            (csv_dir / name, kind, official)
            for name, kind, official in CASE_TABLES
            if self.abnormality in ("both", kind)
        ]
        missing = [path.name for path, _, _ in tables if not path.is_file()]
        if missing:
            raise ToolkitError(
                f"cbis_ddsm: {csv_dir} lacks {missing}; abnormality={self.abnormality} reads "
                f"{[path.name for path, _, _ in tables]} (abnormality=mass or calc reads only "
                "that kind's two)"
            )
        label_of: dict[str, int] = {}
        official_of: dict[str, str] = {}
        patient_of: dict[str, str] = {}
        facts_of: dict[str, dict[str, set[str]]] = {}
        unmatched: list[str] = []
        for table_path, _, official in tables:
            table = read_csv_table(table_path, CASE_COLUMNS)
            for line, record in table:
                pathology = record["pathology"]
                if pathology not in PATHOLOGIES:
                    raise ToolkitError(
                        f"{table.place(line)}: pathology {pathology!r} is not one of "
                        f"{list(PATHOLOGIES)}"
                    )
                if self.roi:
                    column = "cropped image file path"
                    path = resolver.crop(record[column], record["ROI mask file path"])
                else:
                    column = "image file path"
                    path = resolver.full_image(record[column])
                if path is None:
                    unmatched.append(f"{table_path.name} line {line}: {record[column]!r}")
                    continue
                image_id = path.relative_to(self.root).as_posix()
                label = PATHOLOGIES[pathology]
                label_of[image_id] = max(label, label_of.get(image_id, 0))
                official_of[image_id] = official
                patient_of[image_id] = record["patient_id"]
                facts = facts_of.setdefault(image_id, {})
                for name, value in self._facts(record).items():
                    if value:
                        facts.setdefault(name, set()).add(value)
        if unmatched:
            raise ToolkitError(
                f"cbis_ddsm: {len(unmatched)} CSV path(s) match no image under {self.root} "
                f"({resolver.describe()}): " + "; ".join(unmatched[:10])
            )
        self._build_rows(label_of, official_of, patient_of, facts_of)
        self.options.update(
            task="roi" if self.roi else "whole", abnormality=self.abnormality, window=self.window
        )
        self.info["layout"] = resolver.describe()

    def _facts(self, record: dict[str, str]) -> dict[str, str]:
        """One case-table record's metadata values and study ('' where it says nothing)."""
        facts = {
            name: next((metadata_value(record[c]) for c in columns if c in record), "")
            for name, columns in METADATA_COLUMNS.items()
        }
        study = [record["patient_id"], facts["side"], facts["abnormality"]]
        if self.roi:
            study.append(metadata_value(record.get("abnormality id")))
        facts["study"] = "/".join(study) if facts["side"] and facts["abnormality"] else ""
        return facts

    def _build_rows(
        self,
        label_of: dict[str, int],
        official_of: dict[str, str],
        patient_of: dict[str, str],
        facts_of: dict[str, dict[str, set[str]]],
    ) -> None:
        ids = sorted(label_of)
        groups = [patient_of[i] for i in ids]
        by_patient = self.resolve_split_by("patient", groups) == "patient"
        splits = np.asarray([official_of[i] for i in ids], dtype=object)
        dropped = 0
        if by_patient:
            test_patients = {g for g, s in zip(groups, splits, strict=True) if s == "test"}
            keep = [
                i
                for i, (g, s) in enumerate(zip(groups, splits, strict=True))
                if s == "test" or g not in test_patients
            ]
            dropped = len(ids) - len(keep)
            ids = [ids[i] for i in keep]
            groups = [groups[i] for i in keep]
            splits = splits[keep]
        labels = np.asarray([label_of[i] for i in ids], dtype=np.int64)
        train = np.flatnonzero(splits == "train")
        splits[train] = stratified_split(
            labels[train],
            fractions=(1 - VAL_FRACTION, VAL_FRACTION, 0.0),
            seed=self.seed,
            groups=[groups[i] for i in train] if by_patient else None,
        )
        columns = sorted({name for i in ids for name in facts_of.get(i, {})})
        self.rows = RowTable(
            ids=ids,
            splits=splits.astype(str).tolist(),
            labels=labels,
            groups=groups,
            metadata={
                name: ["+".join(sorted(facts_of.get(i, {}).get(name, ()))) for i in ids]
                for name in columns
            }
            or None,
        )
        self.task = TaskInfo(kind="binary", label_names=LABEL_NAMES, headline_metric="roc_auc")
        unit = "patients" if by_patient else "images"
        self.info["split"] = (
            f"official train/test; val {VAL_FRACTION:.0%} of train {unit}, stratified, "
            f"seed {self.seed}"
        )
        if dropped:
            logger.warning(
                "cbis_ddsm: %d train image(s) of official-test patients left out", dropped
            )
            self.info["split"] += (
                f"; {dropped} train image(s) of patients in the official test set left out"
            )

    def dicom_window(self) -> str:
        return self.window


class _Resolver:
    def full_image(self, csv_path: str) -> Path | None:
        raise NotImplementedError

    def crop(self, crop_path: str, mask_path: str) -> Path | None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _csv_parts(csv_path: str) -> tuple[str, ...]:
    """A CSV path's components; the release has stray newlines and backslashes in some rows."""
    return PurePosixPath(csv_path.strip().replace("\\", "/")).parts


def _matches_uid(folder_name: str, uid: str) -> bool:
    if folder_name == uid:
        return True
    tail = _UID_TAIL_NAME.search(folder_name)
    return tail is not None and uid.endswith(tail.group(1)) and len(tail.group(1)) >= UID_TAIL


def _pixel_count(path: Path) -> int:
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True)
    return int(header.Rows) * int(header.Columns)


class _TciaResolver(_Resolver):
    """CSV paths to DICOM files in the tree the NBIA Data Retriever writes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        bases = [root, root / "CBIS-DDSM"]
        self.subjects: dict[str, Path] = {}
        for base in bases:
            if base.is_dir():
                for child in base.iterdir():
                    if child.is_dir():
                        self.subjects.setdefault(child.name, child)

    def describe(self) -> str:
        return "TCIA DICOM tree"

    def _series_files(self, csv_path: str) -> list[Path]:
        parts = _csv_parts(csv_path)
        if not parts:
            return []
        for base in (self.root, self.root / "CBIS-DDSM"):
            exact = base.joinpath(*parts)
            if exact.is_file():
                return sorted(exact.parent.glob("*.dcm"))
        subject = self.subjects.get(parts[0])
        if subject is None or len(parts) < 4:
            return []
        series_uid = parts[2]
        series_dirs = [d for d in subject.glob("*/*") if d.is_dir()]
        matches = [d for d in series_dirs if _matches_uid(d.name, series_uid)]
        if len(matches) != 1:
            # Fall back to the only series in the subject when the UID tail is not in the name.
            if len(series_dirs) != 1:
                return []
            matches = series_dirs
        return sorted(matches[0].glob("*.dcm"))

    def full_image(self, csv_path: str) -> Path | None:
        files = self._series_files(csv_path)
        return files[0] if len(files) == 1 else None

    def crop(self, crop_path: str, mask_path: str) -> Path | None:
        files = sorted(set(self._series_files(crop_path)) | set(self._series_files(mask_path)))
        if not files:
            return None
        return min(files, key=_pixel_count) if len(files) > 1 else files[0]


class _JpegResolver(_Resolver):
    """CSV paths to JPEGs of the Kaggle conversion through csv/dicom_info.csv."""

    def __init__(self, root: Path, dicom_info: Path) -> None:
        self.root = root
        self.by_series: dict[str, list[tuple[str, str, int]]] = {}
        columns = ("image_path", "SeriesDescription", "Rows", "Columns")
        table = read_csv_table(dicom_info, columns)
        for line, record in table:
            parts = PurePosixPath(record["image_path"]).parts
            if "jpeg" not in parts:
                raise ToolkitError(
                    f"{table.place(line)}: image_path {record['image_path']!r} has no jpeg/ folder"
                )
            relative = PurePosixPath(*parts[parts.index("jpeg") :])
            try:
                pixels = int(float(record["Rows"])) * int(float(record["Columns"]))
            except ValueError:
                pixels = 0
            self.by_series.setdefault(relative.parent.name, []).append(
                (relative.as_posix(), record["SeriesDescription"], pixels)
            )

    def describe(self) -> str:
        return "JPEG conversion with csv/dicom_info.csv"

    def _entries(self, csv_path: str) -> list[tuple[str, str, int]]:
        parts = _csv_parts(csv_path)
        return self.by_series.get(parts[2], []) if len(parts) >= 3 else []

    def _existing(self, relative: str) -> Path | None:
        path = self.root / relative
        return path if path.is_file() else None

    def full_image(self, csv_path: str) -> Path | None:
        entries = self._entries(csv_path)
        full = [e for e in entries if e[1] == "full mammogram images"] or entries
        return self._existing(full[0][0]) if len(full) == 1 else None

    def crop(self, crop_path: str, mask_path: str) -> Path | None:
        entries = self._entries(crop_path) + self._entries(mask_path)
        crops = [e for e in entries if e[1] == "cropped images"]
        if len(set(crops)) == 1:
            return self._existing(crops[0][0])
        if not entries:
            return None
        return self._existing(min(entries, key=lambda e: e[2])[0])
