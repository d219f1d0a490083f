"""The `cache` command against a careless or hostile user: every case ends with the right result,
or one line naming the item and the fix and exit code 2 (bad input) or 1 (a check that failed);
never a traceback, never success for what is not. (The extraction's cases live in
tests/extract/test_hostile_inputs.py.)"""

import errno
import os
import shutil

import h5py
import numpy as np
import pytest

from medprobe.cache import StoreWriter, store_path
from medprobe.cache.cli import app as cache_app
from medprobe.cache.console import run_app
from medprobe.cache.files.paths import journal_dir
from tests.cache.conftest import (
    embeddings_for,
    flip_bytes,
    make_rows,
    make_spec,
    overwrite,
    write_all,
    write_container2_store,
)


@pytest.fixture
def cache(isolated_cache_root, monkeypatch, capsys):
    """Run `cache ARGS…` in this process: (exit code, stdout, stderr), in a narrow terminal
    where a message that wrapped would span lines."""
    monkeypatch.setenv("COLUMNS", "60")

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exited:
            run_app(cache_app, [str(a) for a in args])
        out, err = capsys.readouterr()
        return exited.value.code, out, err

    return run


@pytest.fixture
def store(isolated_cache_root):
    rows = make_rows()
    spec = make_spec(rows)
    return write_all(store_path(isolated_cache_root, spec), spec, rows, dim=64)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0].removeprefix("error: ")


def test_verify_passes_a_sound_store(cache, store):
    code, out, _ = cache("verify")
    assert code == 0 and out.strip() == f"ok {store}"


def _nan_rows(path):
    values = embeddings_for(np.arange(5), 64)["cls"]
    values[2, 7] = np.nan
    overwrite(path, "train/embeddings/cls", values)


def _labels_7e9(path):
    with h5py.File(path, "r+") as handle:
        handle["train/labels"][0] = 7_000_000_000


def _copy_under_another_name(path):
    shutil.copy(path, path.with_name("backup.h5"))


# (damage, what `cache verify` must say about it)
DAMAGE = [
    (_nan_rows, "train/embeddings/cls: 1 rows hold NaN or Inf"),
    (lambda p: flip_bytes(p, "test/embeddings/mean"), "checksum mismatch in"),
    (lambda p: flip_bytes(p, "train/ids"), "train/ids: the file is damaged"),
    (_labels_7e9, "1 labels lie outside [0, 3) (from 0 to 7000000000) but the task has 3"),
    (lambda p: p.rename(p.with_name("renamed.h5")), "its name does not match its key"),
    (_copy_under_another_name, "holds the same key: one key is one store"),
    (lambda p: p.write_bytes(p.read_bytes()[:2000]), "not a store: not a readable HDF5 file"),
]


@pytest.mark.parametrize(("damage", "expected"), DAMAGE)
def test_verify_fails_a_damaged_store_with_exit_1(cache, store, damage, expected):
    damage(store)
    code, out, err = cache("verify")
    assert code == 1, out + err
    assert "FAIL" in out and expected in out and not err


def test_verify_of_a_foreign_file_fails_it_and_still_checks_the_others(cache, store):
    foreign = store.parent / "[draft] scan.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x"] = 1
    code, out, _ = cache("verify")
    assert code == 1
    assert f"ok {store}" in out and f"FAIL {foreign}" in out, out
    assert "not a store: an HDF5 file without a store's 'key' and 'spec'" in out


def test_verify_says_a_store_before_checksums_carries_none_and_passes_it(cache):
    rows = make_rows()
    spec = make_spec(rows)
    path = write_container2_store(store_path(os.environ["MEDPROBE_CACHE_DIR"], spec), spec, rows)
    code, out, _ = cache("verify", path)
    assert code == 0 and f"ok {path}" in out
    assert "note: container format 2 carries no checksums" in out


def test_ls_lists_a_foreign_file_as_not_a_store_and_the_store_beside_it(cache, store):
    (store.parent / "notes.h5").write_text("mine")
    code, out, _ = cache("ls")
    assert code == 0
    (foreign_row,) = [line for line in out.splitlines() if "notes.h5" in line]
    assert "not a store: not a readable HDF5 file" in foreign_row
    (store_row,) = [line for line in out.splitlines() if "tiny" in line]
    assert "yes" in store_row


def test_ls_marks_a_trial_store(cache, isolated_cache_root):
    rows = make_rows()
    spec = make_spec(rows)
    write_all(store_path(isolated_cache_root, spec), spec, rows, info={"limit": 10})
    code, out, _ = cache("ls")
    assert code == 0
    header, row = [line for line in out.splitlines() if "┃ dataset" in line or "│ toy" in line]
    assert row[header.index("trial") :].startswith("yes")


def test_ls_shows_names_with_brackets_as_they_are(cache, isolated_cache_root):
    rows = make_rows()
    spec = make_spec(rows, model={"name": "[red]vit[/red]", "source": "timm"})
    write_all(store_path(isolated_cache_root, spec), spec, rows)
    code, out, _ = cache("ls")
    assert code == 0 and "[red]vit[/red]" in out


def test_ls_removes_the_temporary_a_killed_assembly_left(cache, store):
    stale = store.parent / f".{store.name}.tmp-999999999"  # beyond pid_max: never alive
    stale.write_bytes(b"\0" * 1000)
    code, out, _ = cache("ls")
    assert code == 0 and "removed 1 temporary file(s) left by killed runs" in out
    assert not stale.exists() and store.exists()


def test_a_cache_dir_that_is_a_file_is_one_line(cache, tmp_path):
    a_file = tmp_path / "results.csv"
    a_file.write_text("x")
    for command in ("ls", "verify", "rm"):
        args = [command, "--cache-dir", a_file] + ([a_file] if command == "rm" else [])
        code, _, err = cache(*args)
        assert code == 2 and one_error_line(err).startswith(f"--cache-dir '{a_file}' is a file")


def _rm_refusals(root, store):
    inside = store.parent
    return [
        (root.parent / "thesis.h5", "is not under the cache root"),
        (inside, "is a folder; `cache rm` removes only stores"),
        (inside / "[red]notes.txt", "[red]notes.txt is not a store"),
        (inside / "gone--0123456789abcdef.h5", "nothing to remove at"),
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bogus"], "No such command 'bogus'"),
        (["rm"], "Missing argument"),
        (["ls", "--bad"], "No such option: --bad"),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(cache, args, expected):
    code, _, err = cache(*args)
    assert code == 2 and expected in err and "Traceback" not in err


def test_rm_refuses_anything_but_a_store_under_the_root_naming_it(cache, store, tmp_path):
    root = store.parent.parent
    (root.parent / "thesis.h5").write_text("years of work")
    (store.parent / "[red]notes.txt").write_text("mine")
    for path, expected in _rm_refusals(root, store):
        code, _, err = cache("rm", path)
        assert code == 2 and expected in one_error_line(err), err
    assert (root.parent / "thesis.h5").exists() and store.exists()


def test_rm_checks_every_path_before_removing_any(cache, store):
    code, _, err = cache("rm", store, store.parent)
    assert code == 2 and "is a folder" in one_error_line(err) and store.exists()


def test_rm_removes_a_store_and_says_what_it_removed(cache, store):
    code, out, _ = cache("rm", store)
    assert code == 0 and out.strip() == f"removed {store}" and not store.exists()


def test_rm_of_a_journal_whose_writer_runs_is_refused_like_the_store(cache, isolated_cache_root):
    rows = make_rows()
    spec = make_spec(rows)
    path = store_path(isolated_cache_root, spec)
    with StoreWriter(path, spec, rows, flush_rows=2) as writer:
        writer.append(0, np.ones(2, bool), embeddings_for(np.arange(2)))
        writer.flush()
        code, _, err = cache("rm", journal_dir(path))
        assert code == 2
        assert "being written by another process (pid" in one_error_line(err)
        assert journal_dir(path).is_dir()


def test_rm_in_a_read_only_cache_is_one_line(cache, store, monkeypatch):
    real_open = os.open

    def read_only_open(file, flags, *args, **kwargs):
        if str(file).startswith(str(store.parent)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    code, _, err = cache("rm", store)
    assert code == 2 and "(read-only file system) while removing" in one_error_line(err)
    assert store.exists()


def test_rm_removes_a_renamed_copy_with_brackets_and_its_temporaries(cache, store):
    copy = store.with_name("[old] copy.h5")
    shutil.copy(store, copy)
    litter = store.parent / f".{copy.name}.tmp-999999999"
    litter.write_bytes(b"\0")
    code, out, _ = cache("rm", copy)
    assert code == 0 and f"removed {copy}" in out and f"removed {litter}" in out
    assert not copy.exists() and not litter.exists() and store.exists()
