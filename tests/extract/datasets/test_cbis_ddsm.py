"""CBIS-DDSM from synthetic files in the TCIA retriever's tree and the Kaggle JPEG conversion."""

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medprobe.cache import ToolkitError
from medprobe.extract.datasets import build_dataset

MASS_HEADER = [
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]
CALC_HEADER = [
    "patient_id",
    "breast density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "calc type",
    "calc distribution",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]
FULL_SIZE, CROP_SIZE = (24, 32), (8, 6)  # (rows, columns)
UID_ROOT = "1.3.6.1.4.1.9590.100.1.2."


def write_dicom(path: Path, shape: tuple[int, int], seed: int) -> None:
    """A 16-bit MONOCHROME2 mammogram-like DICOM, as CBIS-DDSM stores them (no VOI window)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.random.default_rng(seed).integers(0, 65535, shape, dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "MG"
    dataset.Rows, dataset.Columns = shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)


def uid(n: int) -> str:
    return f"{UID_ROOT}{n:012d}"


# (kind, official split, patient, side/view, [(abnormality id, pathology)])
CASES = [
    ("Mass", "Training", 1, "LEFT_CC", [(1, "MALIGNANT"), (2, "BENIGN")]),
    ("Mass", "Training", 2, "LEFT_CC", [(1, "BENIGN_WITHOUT_CALLBACK")]),
    ("Mass", "Training", 3, "RIGHT_MLO", [(1, "BENIGN")]),
    ("Calc", "Training", 4, "LEFT_MLO", [(1, "MALIGNANT")]),
    ("Calc", "Training", 5, "RIGHT_CC", [(1, "BENIGN")]),
    ("Mass", "Training", 6, "LEFT_CC", [(1, "MALIGNANT")]),
    ("Mass", "Training", 7, "LEFT_CC", [(1, "BENIGN")]),
    ("Calc", "Training", 8, "LEFT_CC", [(1, "MALIGNANT")]),
    ("Calc", "Training", 9, "LEFT_CC", [(1, "BENIGN")]),
    ("Mass", "Training", 10, "RIGHT_CC", [(1, "MALIGNANT")]),
    ("Mass", "Test", 11, "LEFT_CC", [(1, "MALIGNANT")]),
    ("Mass", "Test", 12, "LEFT_MLO", [(1, "BENIGN")]),
    ("Calc", "Test", 13, "LEFT_CC", [(1, "BENIGN_WITHOUT_CALLBACK")]),
    ("Calc", "Test", 3, "RIGHT_CC", [(1, "MALIGNANT")]),  # patient 3 also in train
]


def write_cbis(root: Path, *, layout: str = "tcia") -> Path:
    """The four case CSVs plus images, in `layout` "tcia" (descriptive retriever folder names),
    "classic" (folders named exactly as the CSV paths) or "jpeg" (Kaggle conversion)."""
    tables: dict[str, list[list[str]]] = {}
    dicom_info: list[list[str]] = []
    counter = iter(range(1, 10_000))
    for kind, official, patient, side_view, abnormalities in CASES:
        subject = f"{kind}-{official}_P_{patient:05d}_{side_view}"
        full = (subject, uid(next(counter)), uid(next(counter)))
        full_csv = f"{full[0]}/{full[1]}/{full[2]}/000000.dcm"
        place(root, layout, full, "full mammogram images", ["1-1"], [FULL_SIZE], dicom_info)
        for abnormality, pathology in abnormalities:
            roi = (f"{subject}_{abnormality}", uid(next(counter)), uid(next(counter)))
            # As in many CBIS-DDSM rows, crop and mask share a series and the CSV has the two
            # file names the other way round from the files' order.
            crop_csv = f"{roi[0]}/{roi[1]}/{roi[2]}/000000.dcm"
            mask_csv = f"{roi[0]}/{roi[1]}/{roi[2]}/000001.dcm\n"
            place(
                root, layout, roi, "ROI mask images", ["1-1", "1-2"],
                [FULL_SIZE, CROP_SIZE], dicom_info,
            )  # fmt: skip
            side, view = side_view.split("_")
            row = [f"P_{patient:05d}", "3", side, view, str(abnormality), kind.lower()]
            row += ["OVAL", "CIRCUMSCRIBED", "4", pathology, "3", full_csv, crop_csv, mask_csv]
            split = "train" if official == "Training" else "test"
            tables.setdefault(f"{kind.lower()}_case_description_{split}_set.csv", []).append(row)
    csv_dir = root / "csv" if layout == "jpeg" else root
    csv_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        write_csv(csv_dir / name, MASS_HEADER if name.startswith("mass") else CALC_HEADER, rows)
    if layout == "jpeg":
        header = ["file_path", "image_path", "PatientID", "Rows", "Columns", "SeriesDescription",
                  "SeriesInstanceUID", "StudyInstanceUID"]  # fmt: skip
        write_csv(csv_dir / "dicom_info.csv", header, dicom_info)
    return root


def place(root, layout, names, description, files, shapes, dicom_info):
    subject, study_uid, series_uid = names
    if layout == "classic":
        series = root / "CBIS-DDSM" / subject / study_uid / series_uid
        files = [f"{i:06d}" for i in range(len(files))]
    elif layout == "tcia":
        series = (
            root / "CBIS-DDSM" / subject / f"07-20-2016-DDSM-NA-{study_uid[-5:]}"
            / f"1.000000-{description}-{series_uid[-5:]}"
        )  # fmt: skip
    else:
        series = root / "jpeg" / series_uid
    for seed, (stem, shape) in enumerate(zip(files, shapes, strict=True)):
        if layout == "jpeg":
            series.mkdir(parents=True, exist_ok=True)
            Image.new("L", shape[::-1], 100 + seed).save(series / f"{stem}.jpg")
            kind = "cropped images" if shape == CROP_SIZE else description
            if shape == FULL_SIZE and description != "full mammogram images":
                kind = "ROI mask images"
            dicom_info.append([
                f"CBIS-DDSM/dicom/{series_uid}/{stem}.dcm",
                f"CBIS-DDSM/jpeg/{series_uid}/{stem}.jpg",
                subject, str(shape[0]), str(shape[1]), kind, series_uid, study_uid,
            ])  # fmt: skip
        else:
            write_dicom(series / f"{stem}.dcm", shape, seed)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture(scope="module")
def tcia_root(tmp_path_factory):
    return write_cbis(tmp_path_factory.mktemp("cbis") / "tcia")


def split_of_groups(dataset) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for group, split in zip(dataset.rows.groups, dataset.rows.splits, strict=True):
        found.setdefault(group, set()).add(split)
    return found


def test_whole_image_labels_split_and_metric(tcia_root):
    dataset = build_dataset("cbis_ddsm", tcia_root)
    assert dataset.task.kind == "binary" and dataset.task.headline_metric == "roc_auc"
    assert dataset.task.label_names == ("benign", "malignant")
    label = {i.split("/")[1]: y for i, y in zip(dataset.rows.ids, dataset.rows.labels, strict=True)}
    assert label["Mass-Training_P_00001_LEFT_CC"] == 1  # one malignant of two abnormalities
    assert label["Mass-Training_P_00002_LEFT_CC"] == 0  # BENIGN_WITHOUT_CALLBACK is benign
    assert label["Calc-Test_P_00013_LEFT_CC"] == 0
    # Default split_by=patient: patient 3's train image is left out (patient 3 is in test).
    assert "Mass-Training_P_00003_RIGHT_MLO" not in label
    assert all(len(s) == 1 for s in split_of_groups(dataset).values())
    counts = Counter(dataset.rows.splits)
    assert counts["test"] == 4 and counts["train"] + counts["val"] == 9 and counts["val"] >= 1
    assert all(i.startswith("CBIS-DDSM/") and i.endswith("/1-1.dcm") for i in dataset.rows.ids)
    assert "left out" in dataset.info["split"] and dataset.options["task"] == "whole"
    again = build_dataset("cbis_ddsm", tcia_root)
    assert list(again.rows.splits) == list(dataset.rows.splits), "seed-42 default is stable"
    image = dataset.read_image(0)
    pixels = np.asarray(image)
    assert image.mode == "L" and image.size == FULL_SIZE[::-1]
    assert pixels.min() == 0 and pixels.max() == 255  # 16-bit percentile-windowed to 8-bit


def test_image_split_keeps_the_official_test_set_and_train_rows(tcia_root):
    dataset = build_dataset("cbis_ddsm", tcia_root, split_by="image")
    assert len(dataset) == 14 and Counter(dataset.rows.splits)["test"] == 4
    assert dataset.info["split_by"] == "image"


def test_roi_task_reads_the_crop_even_where_the_csv_swaps_crop_and_mask(tcia_root):
    dataset = build_dataset("cbis_ddsm", tcia_root, roi=True, split_by="image")
    assert len(dataset) == 15  # one row per abnormality
    assert all(i.endswith("/1-2.dcm") for i in dataset.rows.ids)  # the smaller file
    assert dataset.read_image(0).size == CROP_SIZE[::-1]
    assert dataset.options["task"] == "roi"


def test_abnormality_filter(tcia_root):
    dataset = build_dataset("cbis_ddsm", tcia_root, abnormality="calc", split_by="image")
    assert all("/Calc-" in i for i in dataset.rows.ids) and len(dataset) == 6


def test_classic_folders_named_as_the_csv_paths(tmp_path):
    dataset = build_dataset("cbis_ddsm", write_cbis(tmp_path / "classic", layout="classic"))
    assert all(i.endswith("/000000.dcm") for i in dataset.rows.ids)


def test_jpeg_conversion_through_dicom_info(tmp_path):
    root = write_cbis(tmp_path / "kaggle", layout="jpeg")
    whole = build_dataset("cbis_ddsm", root)
    assert all(i.startswith("jpeg/") and i.endswith("/1-1.jpg") for i in whole.rows.ids)
    assert whole.info["layout"].startswith("JPEG")
    roi = build_dataset("cbis_ddsm", root, roi=True)
    assert roi.read_image(0).size == CROP_SIZE[::-1]


def test_unmatched_paths_are_listed_with_file_and_line(tmp_path):
    root = write_cbis(tmp_path / "tcia")
    subject = root / "CBIS-DDSM" / "Calc-Training_P_00005_RIGHT_CC"
    shutil.rmtree(next(subject.glob("*/*")))
    with pytest.raises(ToolkitError) as caught:
        build_dataset("cbis_ddsm", root)
    message = str(caught.value)
    assert "1 CSV path(s) match no image" in message
    # The second record starts on line 4: the first one's mask path spans two lines (as in the
    # release), and lines are counted as an editor shows them.
    assert "calc_case_description_train_set.csv line 4" in message and "P_00005" in message


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        ("pathology", r"mass_case_description_test_set.csv, line 2: pathology 'CANCER'"),
        ("column", r"missing column\(s\) \['pathology'\]"),
        ("option", r"abnormality='masses'"),
    ],
)
def test_bad_input_names_file_row_and_value(tmp_path, corrupt, message):
    root = write_cbis(tmp_path / "tcia")
    table = root / "mass_case_description_test_set.csv"
    rows = list(csv.reader(table.read_text().splitlines()))
    options = {}
    if corrupt == "pathology":
        rows[1][9] = "CANCER"
    elif corrupt == "column":
        rows[0][9] = "diagnosis"
    else:
        options["abnormality"] = "masses"
    write_csv(table, rows[0], rows[1:])
    with pytest.raises(ToolkitError, match=message):
        build_dataset("cbis_ddsm", root, **options)


def test_real_dicom_through_the_cbis_reader(tmp_path):
    """pydicom's bundled CT slice placed as a TCIA full mammogram, decoded by the adapter."""
    pydicom_data = pytest.importorskip("pydicom.data")
    source = pydicom_data.get_testdata_file("CT_small.dcm")
    if source is None:
        pytest.skip("pydicom's test files are not installed")
    root = write_cbis(tmp_path / "tcia")
    target = next((root / "CBIS-DDSM" / "Mass-Test_P_00011_LEFT_CC").glob("*/*/1-1.dcm"))
    shutil.copy(source, target)
    dataset = build_dataset("cbis_ddsm", root)
    image = dataset.read_image(dataset.rows.ids.index(target.relative_to(root).as_posix()))
    assert image.mode == "L" and image.size == (128, 128)
    assert np.asarray(image).std() > 10
