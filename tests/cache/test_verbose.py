"""`-v` shows what `extract` and `cache` commands are doing, as INFO log lines on stderr."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import medprobe.extract.models as models_package
from medprobe.cache import store_path
from medprobe.cache.console import run_app
from medprobe.extract import cli as extract_cli
from tests.cache.conftest import make_rows, make_spec, write_all
from tests.extract.conftest import tiny_vit_spec, write_folder_dataset


def test_cache_verify_v_says_what_it_reads(tmp_path):
    """In a fresh process, as a user runs it: nothing configured logging before `run_app`
    (one process only: `import medprobe` takes seconds; without -v the level is WARNING)."""
    rows = make_rows(12)
    path = write_all(store_path(tmp_path, make_spec(rows)), make_spec(rows), rows)
    command = "from medprobe.cache.cli import main; main()"
    args = [sys.executable, "-c", command, "verify", "--cache-dir", str(tmp_path)]
    verbose = subprocess.run([*args, "-v"], capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 0, verbose.stderr
    assert f"INFO medprobe.cache.inventory.verify: verifying {path}: splits" in verbose.stderr


def test_extract_run_logs_each_step(tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.setattr(models_package, "resolve_model", lambda name: tiny_vit_spec())
    images = write_folder_dataset(tmp_path / "images", n_per_class=4)
    caplog.set_level(logging.INFO, logger="medprobe")
    args = ["run", "--model", "tiny-vit", "--dataset", "folder", "--data-dir", str(images)]
    args += ["--no-pretrained", "--workers", "0", "--cache-dir", str(tmp_path / "c"), "-v"]
    with pytest.raises(SystemExit) as exited:
        run_app(extract_cli.app, args)
    assert exited.value.code == 0, capsys.readouterr()
    for step in (
        f"indexing dataset folder at {images}",
        "folder: 8 images {'train': 6, 'val': 0, 'test': 2} to extract",
        "building tiny-vit (timm vit_tiny_patch16_224) for cpu",
        "rows 0 to 8 of 8 to write",
        "published",
    ):
        assert step in caplog.text, caplog.text
    assert Path(tmp_path / "c").is_dir()
