"""`probe report`, `probe run` and `probe similarity` where files are damaged or cannot be
written: one line (exit 2 for what the user can fix in the folder, 1 for a write that failed),
nothing half-written published, no temporary left behind."""

import errno
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from medprobe.probe.run.runner import probe as mp_probe
from medprobe.probe.stats.predictions import Predictions
from tests.probe.conftest import write_blob_store
from tests.probe.run.conftest import QUICK, files_under, one_line

# --- 6. no tracebacks: damaged folders, unwritable places, a full disk ------------------------


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("results")
    root = base / "embeddings"
    write_blob_store(root, model="a", separation=2.0, n_train=60, n_test=30)
    write_blob_store(root, model="b", separation=0.5, n_train=60, n_test=30)
    out = base / "out"
    mp_probe(root, shots=2, seeds=2, bootstrap=0, methods="prototype", out=out, progress=False)
    return out


def _damage(folder: Path, damage: str) -> None:
    if damage == "run.json damaged":
        (folder / "run.json").write_text('{"datasets": {"blobs"')
    elif damage == "results.csv cut short":
        text = (folder / "results.csv").read_text()
        (folder / "results.csv").write_text(text[: len(text) // 2])
    elif damage == "results.csv header only":
        header = (folder / "results.csv").read_text().splitlines()[0]
        (folder / "results.csv").write_text(header + "\n")
    elif damage == "results.csv empty":
        (folder / "results.csv").write_text("")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("run.json damaged", "run.json cannot be read (Expecting"),
        ("results.csv cut short", "results.csv ends in the middle of a row"),
        ("results.csv header only", "results.csv holds a header and no rows"),
        ("results.csv empty", "results.csv cannot be read"),
    ],
)
def test_report_on_a_damaged_folder_is_one_line_exit_2(
    cli, results_folder, tmp_path, damage, expected
):
    folder = tmp_path / "copy"
    folder.mkdir()
    for item in results_folder.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    _damage(folder, damage)
    result = cli("report", folder)
    assert result.exit_code == 2
    assert expected in one_line(result) and "rerun `probe run`" in one_line(result)


def test_report_where_report_md_is_a_folder_is_one_line(cli, results_folder, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for item in results_folder.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    (folder / "report.md").unlink()
    (folder / "report.md").mkdir()
    result = cli("report", folder)
    assert result.exit_code == 2 and "report.md is not a file; move it away" in one_line(result)


def test_report_in_a_folder_it_cannot_write_is_one_line_exit_1_and_the_old_report_stays(
    cli, results_folder, tmp_path, monkeypatch
):
    folder = tmp_path / "copy"
    folder.mkdir()
    for item in results_folder.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    before = files_under(folder)

    def read_only(path, *args, **kwargs):  # what mkdir meets in a read-only folder
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = cli("report", folder)
    assert result.exit_code == 1
    assert "cannot write the report into" in one_line(result)
    assert "Permission denied" in one_line(result)
    assert files_under(folder) == before


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["predictions", "report"])
def test_a_full_disk_during_run_is_one_line_exit_1_and_publishes_nothing(
    cli, blob_root, tmp_path, monkeypatch, where
):
    if where == "predictions":
        monkeypatch.setattr(Predictions, "save", _disk_full)
    else:
        monkeypatch.setattr("medprobe.probe.run.results.write_report", _disk_full)
    out = tmp_path / "results" / "out"
    result = cli("run", *QUICK, "--save-predictions", "--cache-dir", blob_root, "--out", out)
    assert result.exit_code == 1, result.output
    assert "no space left on the device" in one_line(result)
    assert "nothing was published" in one_line(result)
    assert list((tmp_path / "results").iterdir()) == []


def test_a_full_disk_during_similarity_is_one_line_exit_1_and_publishes_nothing(
    cli, blob_root, tmp_path, monkeypatch
):
    monkeypatch.setattr(pd.DataFrame, "to_csv", _disk_full)
    out = tmp_path / "results" / "similar"
    result = cli("similarity", "--metrics", "cka", "--cache-dir", blob_root, "--out", out)
    assert result.exit_code == 1, result.output
    assert "no space left on the device" in one_line(result)
    assert list((tmp_path / "results").iterdir()) == []


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs (as root, where mounts are allowed; skipped elsewhere)."""
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.slow
def test_a_real_full_disk_while_hdf5_writes_predictions_is_one_line_and_a_clean_exit(
    blob_root, full_disk
):
    """HDF5 writing to a full disk itself left a file it could not close: errors at every
    clean-up and a segmentation fault at exit (seen). Its own process, so a crash would show."""
    command = [sys.executable, "-c", "from medprobe.probe.cli import main; main()"]
    command += ["run", *QUICK, "--seeds", "20", "--save-predictions"]
    command += ["--cache-dir", str(blob_root), "--out", str(full_disk / "out")]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1, completed.stderr
    assert completed.stderr.strip().splitlines() == [
        f"error: writing --out '{full_disk / 'out'}' failed (no space left on the device); "
        "nothing was published; free space or choose another folder, then rerun"
    ]
    assert list(full_disk.iterdir()) == []
