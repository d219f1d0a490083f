"""ISIC 2019, APTOS 2019 and MedMNIST+ read from synthetic files in their official layouts."""

import csv
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from medprobe.cache import ToolkitError
from medprobe.extract.datasets import build_dataset
from medprobe.extract.datasets.isic2019 import GROUND_TRUTH, IMAGE_DIR, ISIC_CLASSES, METADATA


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_isic(root, n_per_class=10, lesions=True):
    (root / IMAGE_DIR).mkdir(parents=True)
    truth, metadata = [], []
    for c in range(len(ISIC_CLASSES)):
        for i in range(n_per_class):
            name = f"ISIC_{c:02d}{i:05d}"
            Image.new("RGB", (12, 10), (c * 30, i, 0)).save(root / IMAGE_DIR / f"{name}.jpg")
            one_hot = ["1.0" if k == c else "0.0" for k in range(len(ISIC_CLASSES))]
            truth.append([name, *one_hot, "0.0"])
            metadata.append([name, "45.0", "torso", f"IL_{c:02d}{i // 2:04d}", "male"])
    write_csv(root / GROUND_TRUTH, ["image", *ISIC_CLASSES, "UNK"], truth)
    if lesions:
        write_csv(
            root / METADATA,
            ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"],
            metadata,
        )
    return root


def test_isic2019_labels_split_and_headline(tmp_path):
    dataset = build_dataset("isic2019", write_isic(tmp_path / "isic"))
    assert dataset.task.headline_metric == "balanced_accuracy"
    assert dataset.task.label_names == ISIC_CLASSES
    counts = Counter(dataset.rows.splits)
    assert counts == {"train": 64, "val": 8, "test": 8}  # 80/10/10 of 10 per class, stratified
    again = build_dataset("isic2019", tmp_path / "isic")
    assert list(again.rows.splits) == list(dataset.rows.splits), "seed-42 default is stable"
    assert dataset.read_image(0).size == (12, 10)


def test_isic2019_patient_split_keeps_each_lesion_in_one_split(tmp_path):
    dataset = build_dataset("isic2019", write_isic(tmp_path / "isic"), split_by="patient")
    split_of: dict[str, set[str]] = {}
    for group, split in zip(dataset.rows.groups, dataset.rows.splits, strict=True):
        split_of.setdefault(group, set()).add(split)
    assert all(len(s) == 1 for s in split_of.values())
    assert "grouped by lesion_id" in dataset.info["split"]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        ("not_one_hot", "not one-hot"),
        ("unk", "marked UNK"),
        ("absent", "are not in"),
        ("unlisted", "are not listed"),
        ("column", "missing column"),
    ],
)
def test_isic2019_bad_input_names_file_and_row(tmp_path, corrupt, message):
    root = write_isic(tmp_path / "isic", n_per_class=2)
    rows = list(csv.reader((root / GROUND_TRUTH).read_text().splitlines()))
    if corrupt == "not_one_hot":
        rows[3][1] = "1.0"  # a second 1 beside NV
    elif corrupt == "unk":
        rows[3][1:] = ["0.0"] * 8 + ["1.0"]
    elif corrupt == "absent":
        (root / IMAGE_DIR / f"{rows[1][0]}.jpg").unlink()
    elif corrupt == "unlisted":
        Image.new("RGB", (4, 4)).save(root / IMAGE_DIR / "ISIC_9999999.jpg")
    elif corrupt == "column":
        rows[0][1] = "MELANOMA"
    write_csv(root / GROUND_TRUTH, rows[0], rows[1:])
    with pytest.raises(ToolkitError, match=message) as caught:
        build_dataset("isic2019", root)
    if corrupt in ("not_one_hot", "unk"):
        assert "line 4" in str(caught.value)


def test_aptos2019_is_ordinal_with_qwk_and_a_stratified_split(tmp_path):
    root = tmp_path / "aptos"
    (root / "train_images").mkdir(parents=True)
    rows = []
    for i in range(100):
        code = f"{i:04x}abcd"
        Image.new("RGB", (30, 20), (i, 0, 0)).save(root / "train_images" / f"{code}.png")
        rows.append([code, str(i % 5)])
    write_csv(root / "train.csv", ["id_code", "diagnosis"], rows)
    dataset = build_dataset("aptos2019", root)
    assert dataset.task.kind == "ordinal" and dataset.task.headline_metric == "quadratic_kappa"
    assert Counter(dataset.rows.splits) == {"train": 70, "val": 15, "test": 15}
    for grade in range(5):
        in_test = [
            s
            for s, y in zip(dataset.rows.splits, dataset.rows.labels, strict=True)
            if y == grade and s == "test"
        ]
        assert len(in_test) == 3
    rows[7][1] = "5"
    write_csv(root / "train.csv", ["id_code", "diagnosis"], rows)
    with pytest.raises(ToolkitError, match=r"line 9: diagnosis '5'"):
        build_dataset("aptos2019", root)


@pytest.mark.parametrize(
    ("flag", "kind", "labels_shape"),
    [
        ("dermamnist", "multiclass", (1,)),
        ("chestmnist", "multilabel", (14,)),
        ("retinamnist", "ordinal", (1,)),
    ],
)
def test_medmnist_task_type_comes_from_the_subset(tmp_path, flag, kind, labels_shape):
    rng = np.random.default_rng(0)
    high = 2 if kind == "multilabel" else 5
    arrays = {}
    for split, n in (("train", 20), ("val", 5), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, high, (n, *labels_shape))
    np.savez(tmp_path / f"{flag}_28.npz", **arrays)
    dataset = build_dataset("medmnist", tmp_path / f"{flag}_28.npz")
    assert dataset.task.kind == kind
    assert Counter(dataset.rows.splits) == {"train": 20, "val": 5, "test": 6}
    assert dataset.rows.ids[20] == "val/000000"
    assert dataset.read_image(25).size == (28, 28)
    if kind == "multilabel":
        assert (
            dataset.rows.labels.shape == (31, 14) and dataset.task.headline_metric == "mean_auroc"
        )


def test_real_fundus_photo_through_the_aptos_reader(tmp_path):
    """scikit-image's retina photograph, written as APTOS lays it out, decoded by the reader."""
    skimage_data = pytest.importorskip("skimage.data")
    root = tmp_path / "aptos"
    (root / "train_images").mkdir(parents=True)
    Image.fromarray(skimage_data.retina()).save(root / "train_images" / "000c1434d8d7.png")
    for i in range(4):
        Image.new("RGB", (8, 8)).save(root / "train_images" / f"pad{i}.png")
    write_csv(
        root / "train.csv",
        ["id_code", "diagnosis"],
        [["000c1434d8d7", "2"], *[[f"pad{i}", str(i % 2)] for i in range(4)]],
    )
    dataset = build_dataset("aptos2019", root)
    row = dataset.rows.ids.index("train_images/000c1434d8d7.png")
    assert dataset.read_image(row).size == skimage_data.retina().shape[1::-1]


CHEXPERT_HEADER = [
    "Path",
    "Sex",
    "Age",
    "Frontal/Lateral",
    "AP/PA",
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
]


def write_chexpert(root, n_patients=30):
    """CheXpert-v1.0-small as unpacked: Paths start with the folder's own name."""
    rng = np.random.default_rng(0)
    tables = {"train": [], "valid": []}
    for p in range(n_patients):
        split = "valid" if p >= n_patients - 5 else "train"
        for view, side in (("view1_frontal", "Frontal"), ("view2_lateral", "Lateral")):
            relative = f"{split}/patient{p:05d}/study1/{view}.jpg"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (16, 20), p).save(root / relative)
            codes = rng.choice(["1.0", "0.0", "-1.0", ""], size=14).tolist()
            tables[split].append(
                [f"CheXpert-v1.0-small/{relative}", "Male", "60", side, "AP", *codes]
            )
    for split, rows in tables.items():
        write_csv(root / f"{split}.csv", CHEXPERT_HEADER, rows)
    return root


@pytest.mark.parametrize("policy", ["zeros", "ones", "ignore"])
def test_chexpert_uncertainty_policies_and_masks(tmp_path, policy):
    root = write_chexpert(tmp_path / "CheXpert-v1.0-small")
    dataset = build_dataset("chexpert", root, uncertain=policy)
    raw = list(csv.reader((root / "train.csv").read_text().splitlines()))[1:]
    first = raw[0][5:]
    row = dataset.rows.ids.index(raw[0][0].split("/", 1)[1])
    labels, known = dataset.rows.labels[row], dataset.rows.label_mask[row]
    for value, label, is_known in zip(first, labels, known, strict=True):
        if value == "-1.0":
            assert label == (1 if policy == "ones" else 0)
            assert is_known == (policy != "ignore")
        else:
            assert label == (1 if value == "1.0" else 0) and is_known
    assert dataset.task.headline_metric == "mean_auroc"
    assert "Edema" in dataset.task.competition_labels


def test_chexpert_splits_follow_patients_and_the_official_valid_set(tmp_path):
    root = write_chexpert(tmp_path / "CheXpert-v1.0-small")
    dataset = build_dataset("chexpert", root, frontal_only=True)
    assert all("frontal" in i for i in dataset.rows.ids)
    split_of: dict[str, set[str]] = {}
    for group, split, image_id in zip(
        dataset.rows.groups, dataset.rows.splits, dataset.rows.ids, strict=True
    ):
        split_of.setdefault(group, set()).add(split)
        assert (split == "test") == image_id.startswith("valid/")
    assert all(len(s) == 1 for s in split_of.values())
    assert Counter(dataset.rows.splits) == {"train": 22, "val": 3, "test": 5}


def test_chexpert_bad_label_value_names_the_line(tmp_path):
    root = write_chexpert(tmp_path / "CheXpert-v1.0-small", n_patients=8)
    rows = list(csv.reader((root / "valid.csv").read_text().splitlines()))
    rows[2][9] = "maybe"
    write_csv(root / "valid.csv", rows[0], rows[1:])
    with pytest.raises(ToolkitError, match=r"valid.csv, line 3: Lung Lesion = 'maybe'"):
        build_dataset("chexpert", root)
