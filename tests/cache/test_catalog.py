"""What is under a cache root: foreign and damaged files listed with why, one key one entry,
renamed stores and trials told apart, and `cache rm` held to stores under the root."""

import errno
import json
import os
import shutil

import h5py
import numpy as np
import pytest

from medprobe.cache import StoreWriter, ToolkitError, complete_stores, resolve_cache_root
from medprobe.cache import store_path as path_for
from medprobe.cache.files.paths import journal_dir, lock_path
from medprobe.cache.files.root import CACHE_DIR_ENV
from medprobe.cache.inventory.catalog import list_stores, removal_target, remove_store
from medprobe.cache.inventory.verify import verify_store
from tests.cache.conftest import embeddings_for, make_rows, make_spec, write_all


@pytest.fixture
def root(tmp_path):
    return tmp_path / "embeddings"


@pytest.fixture
def store(root):
    rows = make_rows()
    spec = make_spec(rows)
    return write_all(path_for(root, spec), spec, rows)


def _foreign_hdf5(path):
    with h5py.File(path, "w") as handle:
        handle["scan"] = np.zeros(3)
    return path


FOREIGN_FILES = [
    ("notes.h5", lambda p: p.write_text("my notes"), "not a store: not a readable HDF5 file"),
    ("scan.h5", _foreign_hdf5, "not a store: an HDF5 file without a store's 'key' and 'spec'"),
    ("empty.h5", lambda p: p.write_bytes(b""), "not a store: not a readable HDF5 file"),
]


@pytest.mark.parametrize(("name", "make", "problem"), FOREIGN_FILES)
def test_a_foreign_file_is_listed_with_why_and_the_stores_beside_it_still_are(
    root, store, name, make, problem
):
    make(store.parent / name)
    entries = {e.path.name: e for e in list_stores(root)}
    assert entries[store.name].usable
    assert entries[name].problem.startswith(problem) and not entries[name].usable
    assert [s.path for s in complete_stores(root)] == [store]


def test_a_truncated_store_is_listed_as_not_a_store(root, store):
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 2])
    (entry,) = list_stores(root)
    assert entry.problem.startswith("not a store") and entry.size_bytes == len(data) // 2


def test_a_journal_with_an_unreadable_header_is_listed_not_raised(root, store):
    broken = store.with_name("other--0123456789abcdef.h5.journal")
    broken.mkdir()
    (broken / "spec.json").write_text("{not json")
    entries = {e.path.name: e for e in list_stores(root)}
    assert "unreadable journal" in entries[broken.name].problem
    assert entries[store.name].usable


def test_two_files_with_one_key_are_one_store_and_the_misnamed_copy_is_named(root, store):
    copy = store.with_name("tiny-backup.h5")
    shutil.copy(store, copy)
    entries = {e.path: e for e in list_stores(root)}
    assert entries[store].same_key == (copy,) and entries[copy].same_key == (store,)
    assert entries[copy].misnamed == store and entries[store].misnamed is None
    with pytest.raises(ToolkitError) as raised:
        complete_stores(root)
    message = str(raised.value)
    assert f"2 files hold one store (key {entries[store].key[:16]}): " in message
    assert str(store) in message and message.endswith(f"`cache rm {copy}`")


def test_a_renamed_store_is_read_by_its_key_and_flagged_by_verify(root, store):
    renamed = store.with_name("my-favourite.h5")
    store.rename(renamed)
    (entry,) = list_stores(root)
    assert entry.usable and entry.misnamed == store
    assert [s.key for s in complete_stores(root)] == [entry.key]
    (problem,) = verify_store(renamed)
    assert f"its name does not match its key: it should be {store}" in problem


def test_a_store_of_a_limited_run_is_a_trial(root):
    rows = make_rows()
    spec = make_spec(rows)
    write_all(path_for(root, spec), spec, rows, info={"limit": 10})
    full = make_spec(rows, preprocessing={"input_size": 64})
    write_all(path_for(root, full), full, rows, info={"limit": None})
    assert sorted(e.trial for e in list_stores(root)) == [False, True]


def _removal_cases(root, store):
    outside = root.parent / "elsewhere.h5"
    return [
        (store, store),
        (journal_dir(store), store),
        (lock_path(store), store),
        (store.parent / f".{store.name}.tmp-12345", store),
        (outside, f"{outside} is not under the cache root {root}"),
        (store.parent / ".." / ".." / "x.h5", f"{root.parent / 'x.h5'} is not under the cache"),
        (root, f"{root} is not under the cache root"),
        (store.parent, f"{store.parent} is a folder"),
        (store.parent / "readme.txt", f"{store.parent / 'readme.txt'} is not a store"),
        (store.parent / "scan.h5", f"{store.parent / 'scan.h5'} is not a store (an HDF5 file"),
        (store.parent / "notes.h5", f"{store.parent / 'notes.h5'} is not a store (not a readable"),
        (store.parent / "gone--0123456789abcdef.h5", "nothing to remove at"),
    ]


def test_removal_targets_are_stores_under_the_root_and_their_companions(root, store):
    (store.parent / ".." / ".." / "x.h5").resolve().write_text("mine")
    (store.parent / "readme.txt").write_text("mine")
    _foreign_hdf5(store.parent / "scan.h5")
    (store.parent / "notes.h5").write_text("mine")
    (root.parent / "elsewhere.h5").write_text("mine")
    for given, expected in _removal_cases(root, store):
        if isinstance(expected, str):
            with pytest.raises(ToolkitError) as raised:
                removal_target(root, given)
            assert str(raised.value).startswith(expected), given
        else:
            assert removal_target(root, given) == expected, given


def test_a_damaged_store_keeps_its_name_and_can_be_removed(root, store):
    store.write_bytes(b"garbage")
    assert removal_target(root, store) == store
    assert remove_store(store) == [store] and not store.exists()


def test_a_journal_is_not_removed_while_its_writer_runs(root):
    rows = make_rows()
    spec = make_spec(rows)
    path = path_for(root, spec)
    with StoreWriter(path, spec, rows, flush_rows=2) as writer:
        writer.append(0, np.ones(2, bool), embeddings_for(np.arange(2)))
        writer.flush()
        target = removal_target(root, journal_dir(path))
        with pytest.raises(
            ToolkitError, match=f"being written by another process \\(pid {os.getpid()}"
        ):
            remove_store(target)
        assert journal_dir(path).is_dir()
    removed = remove_store(removal_target(root, journal_dir(path)))
    assert removed == [journal_dir(path)] and not lock_path(path).exists()


def test_removing_from_a_read_only_cache_is_one_line(root, store, monkeypatch):
    real_open = os.open

    def read_only_open(file, flags, *args, **kwargs):
        if str(file).startswith(str(root)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    with pytest.raises(ToolkitError) as raised:
        remove_store(store)
    assert str(raised.value) == (
        f"cannot write in {store.parent} (read-only file system) while removing {store}; "
        "ask the folder's owner, or remount it writable"
    )
    assert store.exists()


def test_a_cache_root_that_is_a_file_is_refused_naming_where_it_came_from(tmp_path, monkeypatch):
    a_file = tmp_path / "results.csv"
    a_file.write_text("x")
    with pytest.raises(ToolkitError, match=r"^cache_dir='.*results.csv' is a file") as raised:
        resolve_cache_root(a_file)
    assert raised.value.argument == "cache_dir"
    with pytest.raises(ToolkitError, match=r"lies in .*results.csv, a file"):
        resolve_cache_root(a_file / "sub")
    monkeypatch.setenv(CACHE_DIR_ENV, str(a_file))
    with pytest.raises(ToolkitError, match=rf"^\${CACHE_DIR_ENV}='.*results.csv' is a file"):
        resolve_cache_root()
    assert resolve_cache_root(tmp_path / "new") == tmp_path / "new"


def test_an_unfinished_store_is_listed_with_its_key_and_progress(root):
    rows = make_rows()
    spec = make_spec(rows)
    path = path_for(root, spec)
    with StoreWriter(path, spec, rows, flush_rows=2) as writer:
        writer.append(0, np.ones(4, bool), embeddings_for(np.arange(4)))
    header = json.loads((journal_dir(path) / "spec.json").read_text())
    (entry,) = list_stores(root)
    assert entry.key == header["key"] == spec.key() and entry.rows_done == 4
