"""The store: schema readable by plain h5py, keys, journaled resume, the writer lock."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from medprobe.cache import RowTable, StoreWriter, ToolkitError, open_store, store_path
from medprobe.cache.files.paths import journal_dir, lock_path
from medprobe.cache.inventory.catalog import find_complete_store, list_stores, remove_store
from medprobe.cache.inventory.verify import verify_store
from medprobe.cache.lock import StoreLock
from tests.cache.conftest import embeddings_for, make_rows, make_spec, write_all


def test_plain_h5py_reads_the_documented_schema(tmp_path):
    rows = make_rows()
    spec = make_spec(rows)
    path = write_all(store_path(tmp_path, spec), spec, rows)
    with h5py.File(path, "r") as handle:
        assert handle.attrs["complete"]
        assert handle.attrs["key"] == spec.key()
        assert json.loads(handle.attrs["spec"])["poolings"] == ["cls", "mean"]
        ids = [b.decode() for b in handle["train/ids"][()]]
        assert ids == list(rows.ids[:5])
        assert handle["train/labels"][()].tolist() == rows.labels[:5].tolist()
        cls = handle["test/embeddings/cls"][()]
        assert cls.dtype == np.float16 and cls.shape == (5, 4)
        np.testing.assert_allclose(cls, embeddings_for(np.arange(5, 10))["cls"], rtol=1e-3)


def test_key_changes_with_preprocessing_pooling_dtype_and_labels():
    rows = make_rows()
    base = make_spec(rows)
    relabelled = RowTable(ids=rows.ids, splits=rows.splits, labels=(rows.labels + 1) % 3)
    variants = [
        make_spec(rows, preprocessing={"input_size": 64, "mean": [0.5] * 3}),
        make_spec(rows, poolings=("cls",)),
        make_spec(rows, dtype="float32"),
        make_spec(rows, dataset={"name": "toy", "fingerprint": relabelled.fingerprint()}),
    ]
    keys = {v.key() for v in variants} | {base.key()}
    assert len(keys) == len(variants) + 1
    assert make_spec(rows).key() == base.key()
    assert store_path("/r", variants[0]) != store_path("/r", base)


def test_unhashable_value_is_an_error_not_a_random_key():
    rows = make_rows()
    with pytest.raises(ToolkitError, match="cannot hash"):
        make_spec(rows, preprocessing={"mean": object()}).key()


def test_interrupted_writer_resumes_from_the_last_part_with_identical_rows(tmp_path):
    rows = make_rows(11)
    spec = make_spec(rows)
    path = store_path(tmp_path / "a", spec)
    with pytest.raises(RuntimeError), StoreWriter(path, spec, rows, flush_rows=4) as writer:
        writer.append(0, np.ones(4, bool), embeddings_for(np.arange(0, 4)))
        writer.append(4, np.ones(3, bool), embeddings_for(np.arange(4, 7)))
        raise RuntimeError("crash")
    assert not path.exists(), "an unfinished store must never be published"
    entry = list_stores(tmp_path / "a")[0]
    assert not entry.complete and entry.rows_done == 7
    with StoreWriter(path, spec, rows) as writer:
        assert writer.next_row == 7
    resumed = write_all(path, spec, rows)
    uninterrupted = write_all(store_path(tmp_path / "b", spec), spec, rows)
    for split in ("train", "test"):
        a, b = open_store(resumed), open_store(uninterrupted)
        assert a.ids(split).tolist() == b.ids(split).tolist()
        np.testing.assert_array_equal(a.embeddings(split, "mean"), b.embeddings(split, "mean"))
    assert not journal_dir(path).exists()
    assert verify_store(resumed) == []


def test_skipped_rows_are_left_out_and_recorded(tmp_path):
    rows = make_rows(4)
    spec = make_spec(rows)
    with StoreWriter(store_path(tmp_path, spec), spec, rows) as writer:
        ok = np.array([True, False, True, True])
        writer.append(0, ok, embeddings_for(np.array([0, 2, 3])), {1: "img/001.png: truncated"})
        path = writer.finish()
    store = open_store(path)
    assert store.ids("train").tolist() == ["img/000.png"]
    assert store.skipped() == [("img/001.png", "img/001.png: truncated")]


def test_nan_embeddings_are_refused_naming_the_image(tmp_path):
    rows = make_rows(2)
    spec = make_spec(rows)
    values = embeddings_for(np.arange(2))
    values["cls"][1, 0] = np.nan
    with StoreWriter(store_path(tmp_path, spec), spec, rows) as writer:
        with pytest.raises(ToolkitError, match=r"img/001\.png"):
            writer.append(0, np.ones(2, bool), values)
        assert writer.next_row == 0


def test_float16_overflow_is_refused(tmp_path):
    rows = make_rows(2)
    spec = make_spec(rows)
    values = {k: v * 1e6 for k, v in embeddings_for(np.arange(2)).items()}
    writer = StoreWriter(store_path(tmp_path, spec), spec, rows)
    with writer, pytest.raises(ToolkitError, match="float32"):
        writer.append(0, np.ones(2, bool), values)


def test_live_lock_refuses_a_second_writer_naming_the_pid(tmp_path):
    rows = make_rows()
    spec = make_spec(rows)
    path = store_path(tmp_path, spec)
    with StoreWriter(path, spec, rows), pytest.raises(ToolkitError, match=f"pid {os.getpid()}"):
        StoreWriter(path, spec, rows).__enter__()


def test_lock_held_by_another_process_is_refused(tmp_path):
    lock_file = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from medprobe.cache.lock import StoreLock; "
            f"l=StoreLock(__import__('pathlib').Path({str(lock_file)!r})).acquire(); "
            "print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ToolkitError, match=f"pid {holder.pid}"):
            StoreLock(lock_file).acquire()
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's flock: the lock is taken over.
    StoreLock(lock_file).acquire().release()


def test_stale_lock_file_from_a_dead_process_is_taken_over(tmp_path):
    rows = make_rows()
    spec = make_spec(rows)
    path = store_path(tmp_path, spec)
    path.parent.mkdir(parents=True)
    lock_path(path).write_text("pid 999999 on elsewhere")
    assert write_all(path, spec, rows).is_file()
    assert not lock_path(path).exists()


def test_second_finish_is_refused_and_find_reports_complete(tmp_path):
    rows = make_rows()
    spec = make_spec(rows)
    path = write_all(store_path(tmp_path, spec), spec, rows)
    assert find_complete_store(tmp_path, spec) == path
    with pytest.raises(ToolkitError, match="already exists"):
        StoreWriter(path, spec, rows).__enter__()


def test_verify_finds_tampering(tmp_path):
    rows = make_rows()
    spec = make_spec(rows)
    path = write_all(store_path(tmp_path, spec), spec, rows)
    with h5py.File(path, "r+") as handle:
        handle["train/embeddings/cls"][0, 0] = np.inf
        handle.attrs["spec"] = handle.attrs["spec"].replace('"tiny"', '"other"')
    problems = verify_store(path)
    assert any("NaN or Inf" in p for p in problems)
    assert any("does not match" in p for p in problems)


def test_verify_names_a_store_of_an_earlier_format_and_what_to_do(tmp_path):
    rows = make_rows()
    spec = make_spec(rows)
    path = write_all(store_path(tmp_path, spec), spec, rows)
    with h5py.File(path, "r+") as handle:
        handle.attrs["spec"] = json.dumps({**json.loads(handle.attrs["spec"]), "format_version": 1})
        handle.attrs["format_version"] = 1  # an earlier toolkit wrote both
    (problem,) = verify_store(path)
    assert "store format 1" in problem and "extract again" in problem
    assert list_stores(tmp_path)[0].outdated == problem


def test_incomplete_or_foreign_files_are_refused_by_the_reader(tmp_path):
    foreign = tmp_path / "x.h5"
    with h5py.File(foreign, "w") as handle:
        handle["a"] = 1
    with pytest.raises(ToolkitError, match="not a store"):
        open_store(foreign)
    garbage = tmp_path / "y.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(ToolkitError, match="not a readable HDF5"):
        open_store(garbage)


def test_remove_deletes_store_and_journal(tmp_path):
    rows = make_rows()
    spec = make_spec(rows)
    path = write_all(store_path(tmp_path, spec), spec, rows)
    removed = remove_store(path)
    assert path in removed and not path.exists()
    assert list_stores(tmp_path) == []
