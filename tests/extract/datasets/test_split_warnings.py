"""A split a probe cannot score is said at extraction, naming the classes: 1,000 classes of 2
images drawn 70/15/15 all land in train; a CSV may mark every row train."""

import csv

import numpy as np
import pytest
from PIL import Image

import medprobe.extract.models as models_package
from medprobe.cache.console import run_app
from medprobe.extract import cli
from medprobe.extract.datasets.splits import split_warnings, stratified_split
from tests.extract.conftest import tiny_vit_spec

PAIRS = np.repeat(np.arange(1000), 2)  # 1,000 classes of 2 images
TEN = np.repeat(np.arange(3), 10)
NAMES = [f"c{i}" for i in range(1000)]

# (splits, labels, what the warnings say; None: no warning)
CASES = [
    (
        stratified_split(PAIRS, fractions=(0.7, 0.15, 0.15), seed=42),
        PAIRS,
        "the split has no test images (2000 train, 0 val, 0 test); 1000 of 1000 classes have "
        "fewer than 3 images, too few to reach val and test when a split is drawn ('c0', 'c1',",
    ),
    (["train"] * 30, TEN, "the split has no test images (30 train, 0 val, 0 test); a probe"),
    (["test"] * 30, TEN, "the split has no train images (0 train, 0 val, 30 test)"),
    (
        np.where(TEN == 2, "train", np.array(["train", "test"] * 15)),
        TEN,
        "1 of 3 classes have no test image, so a probe cannot score them: 'c2'",
    ),
    (
        np.where(TEN == 0, "test", np.array(["train", "test"] * 15)),
        TEN,
        "1 of 3 classes have no train image, so a probe cannot learn them: 'c0'",
    ),
    (stratified_split(TEN, fractions=(0.7, 0.15, 0.15), seed=42), TEN, None),
    (["train", "test"] * 15, np.eye(3, dtype=np.int8)[TEN], None),  # multi-label, both splits
]


@pytest.mark.parametrize(("splits", "labels", "expected"), CASES)
def test_split_warnings_name_what_a_probe_cannot_measure(splits, labels, expected):
    warnings = split_warnings(splits, labels, NAMES[: int(labels.max()) + 1])
    if expected is None:
        assert warnings == []
    else:
        assert any(expected in w for w in warnings), warnings


def test_a_csv_whose_every_row_is_train_is_extracted_with_a_warning(
    tmp_path, capsys, caplog, monkeypatch
):
    monkeypatch.setattr(models_package, "resolve_model", lambda name: tiny_vit_spec())
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(6):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "img" / f"{i}.png")
        rows.append([f"img/{i}.png", "ab"[i % 2], "train"])
    with open(tmp_path / "list.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "split"], *rows])
    args = ["run", "--model", "tiny-vit", "--dataset", "csv", "--data-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exited:
        run_app(
            cli.app,
            [*args, "--no-pretrained", "--workers", "0", "--cache-dir", str(tmp_path / "c")],
        )
    assert exited.value.code == 0, capsys.readouterr()
    assert "csv: the split has no test images (6 train, 0 val, 0 test)" in caplog.text
