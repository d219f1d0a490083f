"""The CSV rules every CSV-reading adapter shares (encoding, lines, duplicates), and the csv
adapter's own rules for labels and paths."""

import csv
import re

import pytest
from PIL import Image

from medprobe.cache import ToolkitError
from medprobe.extract.datasets import build_dataset
from medprobe.extract.datasets.csv_list import class_name
from tests.extract.datasets.test_cbis_ddsm import write_cbis
from tests.extract.datasets.test_seed_datasets import write_chexpert, write_csv, write_isic


def write_aptos(root):
    (root / "train_images").mkdir(parents=True)
    for i in range(10):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(root / "train_images" / f"img{i}.png")
    write_csv(
        root / "train.csv", ["id_code", "diagnosis"], [[f"img{i}", str(i % 5)] for i in range(10)]
    )
    return root, root / "train.csv"


def write_list(root, rows=None):
    """A csv dataset: images a0..a5 / b0..b5 and list.csv (`rows` replaces its rows)."""
    (root / "img").mkdir(parents=True)
    default = []
    for label in ("a", "b"):
        for i in range(6):
            Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(root / "img" / f"{label}{i}.png")
            default.append([f"img/{label}{i}.png", label])
    write_csv(root / "list.csv", ["path", "label"], default if rows is None else rows)
    return root, root / "list.csv"


ADAPTERS = {
    "csv": write_list,
    "aptos2019": write_aptos,
    "isic2019": lambda root: (
        write_isic(root, n_per_class=2),
        root / "ISIC_2019_Training_GroundTruth.csv",
    ),
    "chexpert": lambda root: (write_chexpert(root, n_patients=8), root / "train.csv"),
    "cbis_ddsm": lambda root: (
        write_cbis(root, layout="jpeg"),
        root / "csv" / "mass_case_description_train_set.csv",
    ),
}


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_a_latin1_byte_is_refused_naming_file_line_and_byte(tmp_path, name):
    root, table = ADAPTERS[name](tmp_path / name)
    lines = table.read_bytes().split(b"\n")
    lines[2] = lines[2] + b"caf\xe9"  # an accented name exported as Latin-1
    table.write_bytes(b"\n".join(lines))
    with pytest.raises(ToolkitError) as caught:
        build_dataset(name, root)
    message = str(caught.value)
    assert f"{table}, line 3: byte 0xe9" in message and "not UTF-8" in message


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_a_utf8_byte_order_mark_is_accepted(tmp_path, name):
    root, table = ADAPTERS[name](tmp_path / name)
    plain = build_dataset(name, root)
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())  # what Excel writes as "CSV UTF-8"
    with_bom = build_dataset(name, root)
    assert with_bom.rows.fingerprint() == plain.rows.fingerprint()


@pytest.mark.parametrize(
    ("name", "column"),
    [("csv", "path"), ("aptos2019", "id_code"), ("isic2019", "image"), ("chexpert", "Path")],
)
def test_an_image_listed_twice_names_both_lines(tmp_path, name, column):
    root, table = ADAPTERS[name](tmp_path / name)
    rows = list(csv.reader(table.read_text().splitlines()))
    rows.append(rows[2])  # line 3 again, as line len(rows)
    write_csv(table, rows[0], rows[1:])
    with pytest.raises(ToolkitError, match="listed twice") as caught:
        build_dataset(name, root)
    assert f"{table}, line 3 and {table}, line {len(rows)}" in str(caught.value)


@pytest.mark.parametrize("label", ["NaN", "", "NA", "null", "None", "nan", "#N/A"])
def test_a_missing_csv_label_is_refused_naming_file_and_line(tmp_path, label):
    root, table = write_list(tmp_path / "list")
    rows = list(csv.reader(table.read_text().splitlines()))
    rows[4][1] = label
    write_csv(table, rows[0], rows[1:])
    with pytest.raises(
        ToolkitError, match=re.escape(f"{table}, line 5: label {label!r} is missing")
    ):
        build_dataset("csv", root)


def test_numeric_labels_follow_one_rule_and_sort_by_value(tmp_path):
    spellings = ["1", "1.0", "01", "+1", "2", "2.00", "10", "10.0", "0.50", ".5", "1e1"]
    rows = [
        [f"img/a{i % 6}.png" if i < 6 else f"img/b{i % 6}.png", label]
        for i, label in enumerate(spellings)
    ]
    root, _ = write_list(tmp_path / "list", rows)
    dataset = build_dataset("csv", root)
    assert dataset.task.label_names == ("0.5", "1", "2", "10")
    expected = [1, 1, 1, 1, 2, 2, 3, 3, 0, 0, 3]
    assert dataset.rows.labels.tolist() == expected
    assert [class_name(s) for s in ("1_0", "Infinity", "٣", "-0", "1E+2")] == [
        "1_0",
        "Infinity",
        "٣",
        "0",
        "100",
    ]


def test_labels_that_differ_only_in_case_are_refused(tmp_path):
    rows = [[f"img/a{i}.png", "Benign" if i == 3 else "benign"] for i in range(6)]
    rows += [[f"img/b{i}.png", "malignant"] for i in range(6)]
    root, _ = write_list(tmp_path / "list", rows)
    with pytest.raises(ToolkitError, match=r"'benign' \(line 2\), 'Benign' \(line 5\) differ only"):
        build_dataset("csv", root)


def test_one_image_by_relative_and_absolute_path_is_one_image(tmp_path):
    root, table = write_list(tmp_path / "list")
    rows = list(csv.reader(table.read_text().splitlines()))
    rows[5][0] = str(root / rows[2][0])  # line 6 names line 3's image by its absolute path
    write_csv(table, rows[0], rows[1:])
    with pytest.raises(ToolkitError, match="listed twice") as caught:
        build_dataset("csv", root)
    assert f"{table}, line 3 and {table}, line 6" in str(caught.value)
    rows[5][0] = "./img/../" + rows[2][0]
    write_csv(table, rows[0], rows[1:])
    with pytest.raises(ToolkitError, match=f"{table}, line 3 and {table}, line 6"):
        build_dataset("csv", root)


def test_absolute_paths_inside_the_csv_folder_get_relative_ids(tmp_path):
    root, table = write_list(tmp_path / "list")
    rows = list(csv.reader(table.read_text().splitlines()))
    relative = build_dataset("csv", root)
    write_csv(table, rows[0], [[str(root / path), label] for path, label in rows[1:]])
    absolute = build_dataset("csv", root)
    assert list(absolute.rows.ids) == list(relative.rows.ids)
    assert absolute.rows.fingerprint() == relative.rows.fingerprint()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("img/a0.png", "1 fields but the header has 2"),  # truncated
        ("img/a,0.png,a", "3 fields but the header has 2"),  # an unquoted comma
    ],
)
def test_a_line_with_the_wrong_field_count_is_refused(tmp_path, line, message):
    root, table = write_list(tmp_path / "list")
    text = table.read_text().splitlines()
    text[3] = line
    table.write_text("\n".join(text) + "\n")
    with pytest.raises(ToolkitError, match=re.escape(f"{table}, line 4: {message}")):
        build_dataset("csv", root)


def test_a_trailing_comma_and_blank_lines_are_harmless(tmp_path):
    root, table = write_list(tmp_path / "list")
    plain = build_dataset("csv", root)
    text = table.read_text().splitlines()
    table.write_text("\n".join([text[0], "", *(f"{t}," for t in text[1:]), ""]) + "\n")
    assert build_dataset("csv", root).rows.fingerprint() == plain.rows.fingerprint()


def test_utf16_and_nul_bytes_are_refused(tmp_path):
    root, table = write_list(tmp_path / "list")
    text = table.read_text()
    table.write_bytes(text.encode("utf-16"))
    with pytest.raises(ToolkitError, match="UTF-16"):
        build_dataset("csv", root)
    table.write_bytes(text.encode().replace(b"img/a2", b"img/a\x002"))
    with pytest.raises(ToolkitError, match=rf"{re.escape(str(table))}, line 4: a NUL byte"):
        build_dataset("csv", root)
