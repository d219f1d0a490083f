"""The writer against a full disk, a read-only cache, a killed assembly and a slow model: one
line naming the place and the fix, nothing published that is not complete, and a rerun that
finishes the same store."""

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import medprobe.cache.assemble as assemble_module
import medprobe.cache.writer as writer_module
from medprobe.cache import StoreWriter, ToolkitError, open_store, store_path
from medprobe.cache.files.paths import journal_dir
from medprobe.cache.inventory.catalog import list_stores, remove_stale_files
from medprobe.cache.inventory.verify import verify_store
from medprobe.cache.journal import contiguous_parts
from tests.cache.conftest import embeddings_for, make_rows, make_spec, write_all

real_write_bytes = Path.write_bytes


def _fail_writes(monkeypatch, error_number: int, *, name_starts: str, after: int = 0) -> None:
    """Make `Path.write_bytes` (the plain file I/O that publishes parts and stores) raise
    `error_number` for temporaries whose name starts with `name_starts`, after `after` successes."""
    seen = {"count": 0}

    def write_bytes(self: Path, data) -> int:
        if self.name.startswith(name_starts):
            seen["count"] += 1
            if seen["count"] > after:
                raise OSError(error_number, os.strerror(error_number), str(self))
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def _same_store(a: Path, b: Path) -> None:
    for split in ("train", "test"):
        first, second = open_store(a), open_store(b)
        assert first.ids(split).tolist() == second.ids(split).tolist()
        for pooling in ("cls", "mean"):
            np.testing.assert_array_equal(
                first.embeddings(split, pooling), second.embeddings(split, pooling)
            )


@pytest.mark.parametrize("elapsed", [True, False])
def test_a_part_is_written_once_flush_seconds_have_passed_whatever_the_rows(
    tmp_path, monkeypatch, elapsed
):
    clock = {"now": 1000.0}
    monkeypatch.setattr(writer_module, "monotonic", lambda: clock["now"])
    rows = make_rows(6)
    spec = make_spec(rows)
    path = store_path(tmp_path, spec)
    with StoreWriter(path, spec, rows, flush_rows=1000, flush_seconds=30.0) as writer:
        writer.append(0, np.ones(2, bool), embeddings_for(np.arange(0, 2)))
        clock["now"] += 31.0 if elapsed else 29.0
        writer.append(2, np.ones(2, bool), embeddings_for(np.arange(2, 4)))  # 30 s since row 0?
        writer.append(4, np.ones(2, bool), embeddings_for(np.arange(4, 6)))
        writer.flush()
        parts = [(start, stop) for start, stop, _ in contiguous_parts(writer.journal)]
    assert parts == ([(0, 4), (4, 6)] if elapsed else [(0, 6)])


def test_a_part_is_written_once_its_embeddings_reach_part_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "PART_BYTES", 40)  # a row is 2 poolings x 4 x float16
    rows = make_rows(10)
    spec = make_spec(rows)
    with StoreWriter(store_path(tmp_path, spec), spec, rows, flush_rows=1000) as writer:
        for start in range(0, 10, 2):
            writer.append(start, np.ones(2, bool), embeddings_for(np.arange(start, start + 2)))
        writer.flush()
        parts = [(start, stop) for start, stop, _ in contiguous_parts(writer.journal)]
    assert parts == [(0, 4), (4, 8), (8, 10)]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"flush_rows": 0}, "flush_rows=0: must be at least 1"),
        ({"flush_seconds": 0.0}, "flush_seconds=0.0: must be positive"),
        ({"flush_seconds": float("nan")}, "flush_seconds=nan: must be positive"),
    ],
)
def test_flush_settings_that_would_never_flush_are_refused(tmp_path, setting, message):
    rows = make_rows(2)
    with pytest.raises(ToolkitError) as raised:
        StoreWriter(tmp_path / "x.h5", make_spec(rows), rows, **setting)
    assert str(raised.value) == message and raised.value.argument == next(iter(setting))


def test_a_full_disk_while_journaling_is_one_line_and_the_rerun_resumes(tmp_path, monkeypatch):
    rows = make_rows(10)
    spec = make_spec(rows)
    path = store_path(tmp_path / "a", spec)
    _fail_writes(monkeypatch, errno.ENOSPC, name_starts=".part-", after=1)
    with pytest.raises(ToolkitError) as raised:
        write_all(path, spec, rows, flush_rows=2)  # parts are written on the background thread
    message = str(raised.value)
    assert message.startswith("no space left on the device while writing journal part ")
    assert str(journal_dir(path)) in message and "more is needed" in message
    assert "then rerun: it resumes at row 2 of 10" in message
    assert not path.exists(), "nothing may be published"
    (entry,) = list_stores(tmp_path / "a")
    assert not entry.complete and entry.rows_done == 2
    assert not list(journal_dir(path).glob(".*")), "no temporary is left in the journal"
    monkeypatch.undo()
    resumed = write_all(path, spec, rows)
    _same_store(resumed, write_all(store_path(tmp_path / "b", spec), spec, rows))
    assert verify_store(resumed) == []


@pytest.mark.parametrize("in_memory", [True, False])
def test_not_enough_space_to_assemble_is_refused_before_writing_and_the_rerun_finishes(
    tmp_path, monkeypatch, in_memory
):
    if not in_memory:
        monkeypatch.setattr(assemble_module, "IN_MEMORY_BYTES", 0)
    rows = make_rows(10)
    spec = make_spec(rows)
    path = store_path(tmp_path, spec)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=1000))
    with pytest.raises(ToolkitError, match=r"^not enough space for assembling .*1000 B is free"):
        write_all(path, spec, rows)
    assert not path.exists() and list_stores(tmp_path)[0].rows_done == 10
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage)
    assert write_all(path, spec, rows) == path and verify_store(path) == []


def test_a_disk_that_fills_up_during_assembly_publishes_nothing(tmp_path, monkeypatch):
    rows = make_rows(10)
    spec = make_spec(rows)
    path = store_path(tmp_path, spec)
    _fail_writes(monkeypatch, errno.ENOSPC, name_starts=f".{path.name}")
    with pytest.raises(ToolkitError, match=r"^no space left on the device while assembling "):
        write_all(path, spec, rows)
    assert not path.exists() and not list(path.parent.glob(".*"))
    monkeypatch.undo()
    assert write_all(path, spec, rows) == path


def test_a_store_assembled_on_disk_equals_one_assembled_in_memory(tmp_path, monkeypatch):
    rows = make_rows(10)
    spec = make_spec(rows)
    in_memory = write_all(store_path(tmp_path / "a", spec), spec, rows)
    monkeypatch.setattr(assemble_module, "IN_MEMORY_BYTES", 0)
    on_disk = write_all(store_path(tmp_path / "b", spec), spec, rows)
    _same_store(in_memory, on_disk)
    with h5py.File(on_disk, "r") as handle:
        assert handle["train/embeddings/cls"].fletcher32
    assert verify_store(on_disk) == []


@pytest.mark.parametrize(
    ("error_number", "reason"),
    [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")],
)
def test_a_read_only_cache_is_one_line_naming_the_folder(
    tmp_path, monkeypatch, error_number, reason
):
    rows = make_rows(4)
    spec = make_spec(rows)
    path = store_path(tmp_path, spec)
    path.parent.mkdir(parents=True)
    real_open = os.open

    def read_only_open(file, flags, *args, **kwargs):
        if str(file).startswith(str(tmp_path)) and flags & os.O_CREAT:
            raise OSError(error_number, os.strerror(error_number), str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    with pytest.raises(ToolkitError) as raised:
        write_all(path, spec, rows)
    assert str(raised.value) == (
        f"cannot write in {path.parent} ({reason}) while taking the writer lock "
        f"{path}.lock; choose a writable --cache-dir (or $MEDPROBE_CACHE_DIR)"
    )


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


def test_temporaries_of_killed_runs_are_removed_by_the_next_writer_and_by_ls(tmp_path):
    rows = make_rows(4)
    spec = make_spec(rows)
    path = store_path(tmp_path, spec)
    path.parent.mkdir(parents=True)
    left_by_killed_assembly = path.parent / f".{path.name}.tmp-{_dead_pid()}"
    left_by_killed_assembly.write_bytes(b"\0" * 4096)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        being_written = path.parent / f".other--0123456789abcdef.h5.tmp-{live.pid}"
        being_written.write_bytes(b"\0")
        write_all(path, spec, rows)
        assert not left_by_killed_assembly.exists()
        assert being_written.exists(), "a live writer's temporary is not litter"
        other_dataset = tmp_path / "other" / f".x--0123456789abcdef.h5.tmp-{_dead_pid()}"
        other_dataset.parent.mkdir()
        other_dataset.write_bytes(b"\0")
        assert remove_stale_files(tmp_path) == [other_dataset]
        assert being_written.exists()
    finally:
        live.kill()
        live.wait()
