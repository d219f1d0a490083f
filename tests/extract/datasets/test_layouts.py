"""Layouts read as the user meant or refused naming the folders: split vs class folders, a data
dir one level off, non-UTF-8 file names, and the sources fingerprint that keys image files."""

import logging
import os
import re

import numpy as np
import pytest
from PIL import Image

from medprobe.cache import ToolkitError
from medprobe.extract.datasets import build_dataset
from tests.extract.conftest import write_folder_dataset
from tests.extract.datasets.test_cbis_ddsm import write_cbis
from tests.extract.datasets.test_csv_tables import write_aptos, write_list
from tests.extract.datasets.test_options_and_medmnist import write_npz
from tests.extract.datasets.test_seed_datasets import write_chexpert, write_isic


def test_a_class_folder_named_test_beside_other_classes_is_refused(tmp_path):
    root = write_folder_dataset(tmp_path / "images", n_per_class=2, classes=("benign", "test"))
    with pytest.raises(ToolkitError) as caught:
        build_dataset("folder", root)
    message = str(caught.value)
    assert "mixes split folders ['test'] with other folders ['benign']" in message
    assert "rename the class folder 'test'" in message


def test_a_split_folder_holding_images_directly_is_refused(tmp_path):
    root = write_folder_dataset(tmp_path / "images", n_per_class=2, classes=("train", "test"))
    with pytest.raises(ToolkitError, match=r"test holds images directly"):
        build_dataset("folder", root)


def test_the_layout_found_is_said(tmp_path):
    by_class = build_dataset("folder", write_folder_dataset(tmp_path / "a", n_per_class=4))
    assert by_class.info["split"].startswith("class folders (<class>/<image>)")
    for split in ("train", "test"):
        write_folder_dataset(tmp_path / "b" / split, n_per_class=2)
    by_split = build_dataset("folder", tmp_path / "b")
    assert by_split.info["split"] == "given by split folders test, train (<split>/<class>/<image>)"
    assert sorted(set(by_split.rows.splits)) == ["test", "train"]
    assert len(by_split.rows) == 8


def test_one_class_folder_holding_the_classes_names_the_folder_meant(tmp_path):
    inner = write_folder_dataset(tmp_path / "download" / "dermoscopy", n_per_class=2)
    with pytest.raises(ToolkitError, match=re.escape(f"did you mean --data-dir {inner}?")):
        build_dataset("folder", tmp_path / "download")


def test_images_outside_any_class_folder_are_named(tmp_path, caplog):
    root = write_folder_dataset(tmp_path / "images", n_per_class=2)
    Image.new("RGB", (4, 4)).save(root / "overview.png")
    with caplog.at_level(logging.WARNING):
        dataset = build_dataset("folder", root)
    assert len(dataset.rows) == 4
    assert "1 image(s) directly in" in caplog.text and "overview.png" in caplog.text


def test_hidden_folders_are_no_class(tmp_path):
    root = write_folder_dataset(tmp_path / "images", n_per_class=2)
    (root / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (4, 4)).save(root / ".ipynb_checkpoints" / "x.png")
    (root / "benign" / ".thumbs").mkdir()
    Image.new("RGB", (4, 4)).save(root / "benign" / ".thumbs" / "y.png")
    dataset = build_dataset("folder", root)
    assert dataset.task.label_names == ("benign", "malignant") and len(dataset.rows) == 4


def _medmnist(root):
    root.mkdir(parents=True)
    write_npz(root / "pathmnist.npz", "pathmnist")
    return root


# Each adapter's layout, written one level below the folder the user passes.
LAYOUTS = {
    "chexpert": lambda inner: write_chexpert(inner, n_patients=6),
    "isic2019": lambda inner: write_isic(inner, n_per_class=2),
    "aptos2019": lambda inner: write_aptos(inner)[0],
    "cbis_ddsm": lambda inner: write_cbis(inner, layout="jpeg"),
    "csv": lambda inner: write_list(inner)[0],
    "medmnist": _medmnist,
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_a_data_dir_one_level_too_high_names_the_folder_meant(tmp_path, name):
    inner = LAYOUTS[name](tmp_path / "downloads" / "CheXpert-v1.0-small")
    (tmp_path / "downloads" / "unrelated").mkdir()
    with pytest.raises(ToolkitError) as caught:
        build_dataset(name, tmp_path / "downloads")
    assert f"did you mean --data-dir {inner}?" in str(caught.value)
    build_dataset(name, inner)  # and the folder named is right


@pytest.mark.parametrize("name", ["chexpert", "isic2019", "aptos2019"])
def test_a_data_dir_one_level_too_low_names_the_parent(tmp_path, name):
    root = LAYOUTS[name](tmp_path / "data")
    below = next(p for p in sorted(root.iterdir()) if p.is_dir())
    with pytest.raises(ToolkitError, match=re.escape(f"did you mean --data-dir {root}?")):
        build_dataset(name, below)


def test_a_non_utf8_file_name_is_one_clear_error(tmp_path):
    root = write_folder_dataset(tmp_path / "images", n_per_class=2)
    latin1_name = os.fsencode(root / "benign") + b"/caf\xe9.png"
    Image.new("RGB", (4, 4)).save(latin1_name, format="PNG")
    with pytest.raises(ToolkitError) as caught:
        build_dataset("folder", root)
    message = str(caught.value)
    assert "1 file name(s)" in message and "'benign/caf\\\\xe9.png'" in message
    message.encode("utf-8")  # printable as it is: no surrogates left in the message


def test_sources_fingerprint_follows_file_size_and_time_and_nothing_else(tmp_path):
    root = write_folder_dataset(tmp_path / "images", n_per_class=3)
    dataset = build_dataset("folder", root)
    rows = np.arange(len(dataset.rows))
    first = dataset.sources_fingerprint(rows)
    assert build_dataset("folder", root).sources_fingerprint(rows) == first
    target = root / dataset.rows.ids[2]
    stat = target.stat()
    Image.new("RGB", (40, 48), (1, 2, 3)).save(target)  # replaced under the same name
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old time
    assert dataset.sources_fingerprint(rows) != first
    assert dataset.sources_fingerprint(rows[:2]) == build_dataset(
        "folder", root
    ).sources_fingerprint(rows[:2])


def test_in_memory_sources_are_fingerprinted_by_their_archive(tmp_path):
    npz = write_npz(tmp_path / "pathmnist.npz", "pathmnist")
    dataset = build_dataset("medmnist", npz)
    rows = np.arange(len(dataset.rows))
    before = dataset.sources_fingerprint(rows)
    os.utime(npz, ns=(0, 0))
    assert dataset.sources_fingerprint(rows) != before
    digits = build_dataset("digits", None)
    assert digits.sources_fingerprint(rows) == build_dataset("digits", None).sources_fingerprint(
        rows
    )
    assert digits.sources_fingerprint(rows[:10]) != digits.sources_fingerprint(rows[10:20])
