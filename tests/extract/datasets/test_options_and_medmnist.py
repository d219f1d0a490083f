"""Adapter options (listed, validated, generic seed/split_by) and every MedMNIST+ subset."""

from collections import Counter

import numpy as np
import pytest

from medprobe.cache import ToolkitError
from medprobe.extract.datasets import DATASETS, build_dataset
from medprobe.extract.datasets.medmnist import LABEL_NAMES, MEDMNIST_TASKS


def test_every_entry_lists_its_options_with_generic_seed_and_split_by():
    for name, entry in DATASETS.items():
        assert {"seed", "split_by"} <= set(entry.option_names), name
        assert entry.option_defaults["seed"] == 42
    assert DATASETS["chexpert"].option_defaults["uncertain"] == "zeros"
    assert DATASETS["cbis_ddsm"].option_defaults["roi"] is False


def test_unknown_option_is_refused_with_the_closest_name():
    with pytest.raises(ToolkitError, match=r"unknown option\(s\) sead \(did you mean seed\?\)"):
        build_dataset("digits", None, sead=1)


def test_patient_split_without_patient_ids_is_refused():
    with pytest.raises(ToolkitError, match="split_by=patient needs patient or lesion ids"):
        build_dataset("digits", None, split_by="patient")
    with pytest.raises(ToolkitError, match=r"split_by='lesion'"):
        build_dataset("digits", None, split_by="lesion")


def test_seed_changes_a_drawn_split():
    default = build_dataset("digits", None)
    other = build_dataset("digits", None, seed=7)
    assert list(default.rows.splits) != list(other.rows.splits)
    assert Counter(default.rows.splits) == Counter(other.rows.splits)


def write_npz(path, flag, n=(12, 4, 5), side=28, channels=3):
    kind, n_outputs = MEDMNIST_TASKS[flag]
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        shape = (count, side, side, channels) if channels > 1 else (count, side, side)
        arrays[f"{split}_images"] = rng.integers(0, 255, shape, dtype=np.uint8)
        width = n_outputs if kind == "multilabel" else 1
        high = 2 if kind == "multilabel" else n_outputs
        arrays[f"{split}_labels"] = rng.integers(0, high, (count, width), dtype=np.uint8)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("flag", sorted(MEDMNIST_TASKS))
def test_every_2d_subset_has_its_task_type_and_label_names(tmp_path, flag):
    kind, n_outputs = MEDMNIST_TASKS[flag]
    path = write_npz(tmp_path / f"{flag}_64.npz", flag, side=64, channels=1)
    dataset = build_dataset("medmnist", path)
    assert dataset.task.kind == kind and len(dataset.task.label_names) == n_outputs
    assert dataset.task.label_names == LABEL_NAMES[flag]
    assert Counter(dataset.rows.splits) == {"train": 12, "val": 4, "test": 5}
    assert dataset.rows.ids[:1] == ["train/000000"] and dataset.rows.ids[12] == "val/000000"
    assert dataset.read_image(0).size == (64, 64) and dataset.info["image_size"] == [64, 64]
    if kind == "multilabel":
        assert dataset.rows.labels.shape == (21, n_outputs) and dataset.rows.label_mask.all()


def test_known_task_types():
    assert MEDMNIST_TASKS["chestmnist"][0] == "multilabel"
    assert MEDMNIST_TASKS["retinamnist"][0] == "ordinal"
    assert {MEDMNIST_TASKS[f][0] for f in ("pneumoniamnist", "breastmnist")} == {"binary"}


def test_flag_and_size_pick_a_file_in_a_folder(tmp_path):
    write_npz(tmp_path / "pathmnist.npz", "pathmnist")
    write_npz(tmp_path / "pathmnist_128.npz", "pathmnist", side=128)
    assert build_dataset("medmnist", tmp_path, flag="pathmnist").options["file"] == "pathmnist.npz"
    big = build_dataset("medmnist", tmp_path, flag="pathmnist", size=128)
    assert big.read_image(0).size == (128, 128)
    with pytest.raises(ToolkitError, match=r"none of \['pathmnist_224.npz'\]"):
        build_dataset("medmnist", tmp_path, flag="pathmnist", size=224)


@pytest.mark.parametrize(
    ("flag", "bad_label", "message"),
    [
        ("dermamnist", [7], r"row val/000001 has label \[7\]; dermamnist labels are 0..6"),
        ("chestmnist", [2] + [0] * 13, r"row val/000001 has label \[2, 0,.*0/1 per finding"),
    ],
)
def test_bad_labels_name_file_row_and_value(tmp_path, flag, bad_label, message):
    path = write_npz(tmp_path / f"{flag}.npz", flag)
    arrays = dict(np.load(path))
    arrays["val_labels"][1] = bad_label
    np.savez(path, **arrays)
    with pytest.raises(ToolkitError, match=message):
        build_dataset("medmnist", path)


def test_missing_array_and_unknown_subset(tmp_path):
    path = write_npz(tmp_path / "bloodmnist.npz", "bloodmnist")
    arrays = dict(np.load(path))
    del arrays["test_labels"]
    np.savez(path, **arrays)
    with pytest.raises(ToolkitError, match=r"missing arrays \['test_labels'\]"):
        build_dataset("medmnist", path)
    other = write_npz(tmp_path / "organmnist3d.npz", "bloodmnist")
    with pytest.raises(ToolkitError, match="unknown MedMNIST subset 'organmnist3d'"):
        build_dataset("medmnist", other)
