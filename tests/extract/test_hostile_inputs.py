"""`extract run` as a hostile or careless user runs it: each bad input ends in one line naming
the item and the fix, with exit code 2 (bad input), or in the right result; no traceback, and
nothing reported as done that is not."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medprobe.extract.models as models_package
from medprobe.cache import complete_stores
from medprobe.cache.console import EXIT_USER_ERROR, run_app
from medprobe.cache.inventory.catalog import list_stores
from medprobe.extract import cli
from medprobe.extract.models import resolve_model
from tests.extract.conftest import tiny_vit_spec, write_folder_dataset
from tests.extract.datasets.test_seed_datasets import write_chexpert


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """Named inputs for the table below, and `tiny-vit` as a model name the CLI resolves."""
    monkeypatch.setenv("COLUMNS", "1000")  # one message is one line, however long
    monkeypatch.setattr(
        models_package,  # where mp.extract looks names up
        "resolve_model",
        lambda name: tiny_vit_spec() if name == "tiny-vit" else resolve_model(name),
    )
    found = {"images": write_folder_dataset(tmp_path / "images", n_per_class=3)}
    found["notes"] = tmp_path / "notes.txt"
    found["notes"].write_text("hello, not a checkpoint")
    found["cache_file"] = tmp_path / "cache.h5"
    found["cache_file"].write_text("a file, not a folder")
    found["mixed"] = write_folder_dataset(
        tmp_path / "mixed", n_per_class=2, classes=("benign", "test")
    )
    write_chexpert(tmp_path / "downloads" / "CheXpert-v1.0-small", n_patients=6)
    found["chexpert_parent"] = tmp_path / "downloads"
    found["nan_csv"] = _list_csv(tmp_path / "nan", {3: ["img/a1.png", "NaN"]})
    found["latin1_csv"] = _list_csv(tmp_path / "latin1", {})
    lines = found["latin1_csv"].read_bytes().split(b"\n")
    lines[2] += b"-caf\xe9"
    found["latin1_csv"].write_bytes(b"\n".join(lines))
    twice = tmp_path / "twice"
    found["twice_csv"] = _list_csv(twice, {5: [str(twice / "img" / "a1.png"), "a"]})
    found["latin1_name"] = write_folder_dataset(tmp_path / "names", n_per_class=2)
    Image.new("RGB", (8, 8)).save(bytes(found["latin1_name"] / "benign") + b"/caf\xe9.png", "PNG")
    found["truncated_npz"] = tmp_path / "pathmnist.npz"
    arrays = {f"{s}_{k}": np.zeros((4, 28, 28) if k == "images" else (4, 1), np.uint8)
              for s in ("train", "val", "test") for k in ("images", "labels")}  # fmt: skip
    np.savez_compressed(found["truncated_npz"], **arrays)
    whole = found["truncated_npz"].read_bytes()
    found["truncated_npz"].write_bytes(whole[: len(whole) // 2])  # an interrupted download
    return {key: str(value) for key, value in found.items()}


def _list_csv(root: Path, replaced: dict[int, list[str]]) -> Path:
    """A csv dataset at `root` (a0..a3, b0..b3); `replaced` maps a line number to its fields."""
    (root / "img").mkdir(parents=True)
    rows = []
    for label in ("a", "b"):
        for i in range(4):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(root / "img" / f"{label}{i}.png")
            rows.append([f"img/{label}{i}.png", label])
    for line, fields in replaced.items():
        rows[line - 2] = fields
    with open(root / "list.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label"], *rows])
    return root / "list.csv"


def run(*args: str, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        run_app(cli.app, list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


TINY = ("--model", "tiny-vit")
FOLDER = ("--dataset", "folder", "--data-dir")
FOLDER_RUN = (*TINY, *FOLDER, "{images}", "--workers", "0")
CSV_RUN = (*TINY, "--dataset", "csv", "--no-pretrained", "--data-dir")

# (command-line arguments after `run`, the message its one line holds)
HOSTILE = [
    ([*FOLDER_RUN, "--device", "tpu"], "--device 'tpu': choose auto, cpu, cuda"),
    ([*FOLDER_RUN, "--workers", "-1"], "--workers -1: must be 0 (decode in"),
    ([*FOLDER_RUN, "--batch-size", "0"], "--batch-size 0: must be a whole number of at least 1"),
    ([*FOLDER_RUN, "--dtype", "float64"], "--dtype 'float64': choose one of ['float16', 'float32"),
    ([*FOLDER_RUN, "--limit", "0"], "--limit 0: must be at least 1 image"),
    ([*FOLDER_RUN, "--decode", "x"], "--decode 'x': choose one of ['cpu', 'gpu']"),
    ([*FOLDER_RUN, "--on-error", "x"], "--on-error 'x': choose one of ['fail', 'skip']"),
    ([*FOLDER_RUN, "--shard", "3/3"], "--shard '3/3': expected i/n with 0 <= i < n"),
    (["--model", ",", *FOLDER, "{images}"], "--model ',': names no model; pass one or more names"),
    (["--model", "tiny-vit, tiny-vit", *FOLDER, "{images}"], "model 'tiny-vit' is named twice"),
    (
        [*FOLDER_RUN, "--weights", "{notes}"],
        "--weights {notes}: not a vit_tiny_patch16_224 checkpoint timm can load",
    ),
    (
        [*FOLDER_RUN, "--weights", "{notes}", "--no-pretrained"],
        "--weights {notes}: a checkpoint file is pretrained weights",
    ),
    (
        [*FOLDER_RUN, "--cache-dir", "{cache_file}"],
        "--cache-dir '{cache_file}' is a file: the cache root must be a folder",
    ),
    ([*TINY, *FOLDER, "{mixed}"], "mixes split folders ['test'] with other folders ['benign']"),
    (
        [*TINY, "--dataset", "chexpert", "--data-dir", "{chexpert_parent}"],
        "did you mean --data-dir {chexpert_parent}/CheXpert-v1.0-small?",
    ),
    ([*CSV_RUN, "{nan_csv}"], "{nan_csv}, line 3: label 'NaN' is missing"),
    ([*CSV_RUN, "{latin1_csv}"], "{latin1_csv}, line 3: byte 0xe9 at column"),
    ([*CSV_RUN, "{twice_csv}"], "listed twice: {twice_csv}, line 3 and {twice_csv}, line 5"),
    ([*TINY, *FOLDER, "{latin1_name}"], "1 file name(s) under"),
    ([*TINY, *FOLDER, "{images}/absent"], "--data-dir '{images}/absent' does not exist; check"),
    ([*FOLDER_RUN, "--option", "seed=abc"], "seed='abc' is not a whole number; pass e.g. seed=42"),
    ([*FOLDER_RUN, "--option", "seed=-1"], "seed=-1 is negative; a split seed is a whole number"),
    ([*FOLDER_RUN, "--option", "seed=1.5"], "seed=1.5 is not a whole number"),
    (
        [*FOLDER_RUN, "--option", "seed=1", "--option", "seed=2"],
        "--option seed is given twice (seed=1 and 'seed=2'); give each option once",
    ),
    ([*FOLDER_RUN, "--option", "name=isic2019"], "name='isic2019' is the isic2019 adapter's name"),
    ([*FOLDER_RUN, "--option", "name=../up"], "name='../up' is not a plain name"),
    (
        [*TINY, "--dataset", "medmnist", "--data-dir", "{truncated_npz}"],
        "{truncated_npz}: cannot read this npz file (BadZipFile: ",
    ),
    (
        [*TINY, "--dataset", "medmnist", "--data-dir", "{truncated_npz}"],
        "it is truncated or damaged: delete it and download it again (download=true with "
        "flag=pathmnist",
    ),
]


@pytest.mark.parametrize(("args", "message"), HOSTILE, ids=[m[:40] for _, m in HOSTILE])
def test_bad_input_is_one_line_and_exit_2(inputs, capsys, args, message, tmp_path):
    cache = ["--cache-dir", str(tmp_path / "c")] if "--cache-dir" not in args else []
    code, out, err = run("run", *[a.format(**inputs) for a in args], *cache, capsys=capsys)
    lines = err.strip().splitlines()
    assert code == EXIT_USER_ERROR, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message.format(**inputs) in lines[0]
    assert "wrote" not in out and complete_stores(tmp_path / "c") == []
    assert list((tmp_path / "c").rglob("*.journal")) == [], "nothing half-opened is left"


def test_file_names_with_brackets_keep_them_in_every_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    monkeypatch.setattr(models_package, "resolve_model", lambda name: tiny_vit_spec())
    images = write_folder_dataset(
        tmp_path / "images [v2]", n_per_class=3, classes=("[benign]", "malignant")
    )
    broken = images / "[benign]" / "[1].png"
    broken.write_bytes(b"not a png")
    cache = tmp_path / "cache [x]"
    args = ["run", "--model", "tiny-vit", "--dataset", "folder", "--data-dir", str(images)]
    args += ["--cache-dir", str(cache), "--no-pretrained", "--workers", "0"]
    code, out, err = run(*args, capsys=capsys)
    assert code == EXIT_USER_ERROR and f"error: {broken}: cannot decode image" in err
    code, out, _ = run(*args, "--on-error", "skip", capsys=capsys)
    assert code == 0
    assert "    [benign]/[1].png: " in out and f"{broken}: cannot decode image" in out
    (entry,) = list_stores(cache)
    assert f"wrote {entry.path}" in out and entry.complete


def test_a_data_config_named_by_the_environment_must_exist(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDPROBE_DATA_CONFIG", "datsets.toml")  # a typo for datasets.toml
    code, _, err = run("run", *TINY, "--cache-dir", "c", capsys=capsys)
    assert code == EXIT_USER_ERROR
    assert "error: $MEDPROBE_DATA_CONFIG='datsets.toml': no such file; fix the path" in err


def test_an_animated_gif_is_read_by_its_first_frame_and_said_so(
    tmp_path, capsys, caplog, monkeypatch
):
    """Neither dropped nor silently flattened: the first frame is embedded, with a warning, and
    a file that is no image is named as left out."""
    monkeypatch.setenv("COLUMNS", "1000")
    monkeypatch.setattr(models_package, "resolve_model", lambda name: tiny_vit_spec())
    images = write_folder_dataset(tmp_path / "images", n_per_class=3)
    frames = [Image.new("RGB", (16, 16), (60 * i, 0, 0)) for i in range(3)]
    frames[0].save(images / "benign" / "moving.gif", save_all=True, append_images=frames[1:])
    (images / "benign" / "notes.txt").write_text("not an image")
    cache = tmp_path / "c"
    args = [*TINY, *FOLDER, str(images), "--workers", "0", "--no-pretrained"]
    code, _, err = run("run", *args, "--cache-dir", str(cache), capsys=capsys)
    assert code == 0, err
    assert "moving.gif holds 3 frames; the first is embedded" in caplog.text
    assert "1 file(s) in class folders are not images (suffixes ['.txt'])" in caplog.text
    (store,) = complete_stores(cache)
    ids = {i for split in store.splits for i in store.ids(split)}
    assert "benign/moving.gif" in ids and len(ids) == 7
