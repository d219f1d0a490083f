"""What the reader and `cache verify` make of damaged stores: checksummed datasets, values that
lie (random bytes, a label of 7e9, ids that are not text), and stores written before checksums."""

import json

import h5py
import numpy as np
import pytest

import medprobe.cache.assemble as assemble_module
import medprobe.cache.layout.container as container_module
from medprobe.cache import RowTable, ToolkitError, open_store, store_path
from medprobe.cache.inventory.verify import verify_notes, verify_store
from medprobe.cache.key import CONTENT_VERSION
from medprobe.cache.layout.schema import CONTAINER_FORMAT, CONTAINER_FORMAT_ATTR
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
def store_file(tmp_path):
    rows = make_rows(12)
    spec = make_spec(rows)
    return write_all(store_path(tmp_path, spec), spec, rows, dim=64)


def _datasets(handle: h5py.File) -> list[h5py.Dataset]:
    found = []

    def collect(_: str, item: object) -> None:  # returning anything but None stops the visit
        if isinstance(item, h5py.Dataset):
            found.append(item)

    handle.visititems(collect)
    return found


def test_every_dataset_is_chunked_under_fletcher32_and_the_container_format_is_recorded(
    store_file,
):
    with h5py.File(store_file, "r") as handle:
        datasets = _datasets(handle)
        assert {d.name for d in datasets} >= {"/train/ids", "/train/labels", "/test/embeddings/cls"}
        assert all(d.fletcher32 and d.chunks for d in datasets)
        assert handle.attrs[CONTAINER_FORMAT_ATTR] == CONTAINER_FORMAT == 3
        assert handle.attrs["format_version"] == CONTENT_VERSION == 2


def test_the_container_format_keys_nothing():
    # The key hashes the content version (2), not the container: checksummed stores of this
    # toolkit keep the keys of the stores written before, so nothing is recomputed.
    spec = make_spec(make_rows())
    assert spec.as_dict()["format_version"] == 2
    assert "container_format" not in json.dumps(spec.as_dict())


# (dataset flipped on disk, read that meets it)
CHECKSUMMED_READS = [
    ("train/embeddings/cls", lambda s: s.embeddings("train", "cls")),
    ("test/embeddings/mean", lambda s: s.embeddings("test", "mean", dtype=None)),
    ("train/labels", lambda s: s.labels("train")),
    ("train/ids", lambda s: s.ids("train")),
]


@pytest.mark.parametrize(("dataset", "read"), CHECKSUMMED_READS)
def test_flipped_bytes_fail_the_checksum_naming_store_and_dataset(store_file, dataset, read):
    flip_bytes(store_file, dataset)
    store = open_store(store_file)
    with pytest.raises(ToolkitError) as raised:
        read(store)
    message = str(raised.value)
    assert f"checksum mismatch in {store_file} {dataset}" in message
    assert "cache rm" in message and "extract again" in message
    (problem,) = verify_store(store_file)
    assert f"checksum mismatch in {store_file} {dataset}" in problem


def _random_float16(shape, seed=0) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (*shape[:-1], shape[-1] * 2), np.uint8)
    return noise.view(np.float16)


def test_random_bytes_written_into_embeddings_are_refused_by_reader_and_verify(store_file):
    with h5py.File(store_file, "r") as handle:
        shape = handle["train/embeddings/cls"].shape
    garbage = _random_float16(shape)
    assert not np.isfinite(garbage).all(), "the damage must be the kind that poisons a probe"
    overwrite(store_file, "train/embeddings/cls", garbage)
    with pytest.raises(ToolkitError, match=r"train/embeddings/cls: \d+ rows hold NaN or Inf"):
        open_store(store_file).embeddings("train", "cls")
    (problem,) = verify_store(store_file)
    assert "rows hold NaN or Inf" in problem


LABEL_DAMAGE = [
    (7_000_000_000, r"1 labels lie outside \[0, 3\) \(from 0 to 7000000000\).*3 classes"),
    (-1, r"1 labels lie outside \[0, 3\) \(from -1 to 2\)"),
    (3, r"1 labels lie outside \[0, 3\)"),
]


@pytest.mark.parametrize(("value", "expected"), LABEL_DAMAGE)
def test_labels_outside_the_tasks_classes_are_refused(store_file, value, expected):
    with h5py.File(store_file, "r+") as handle:
        handle["train/labels"][0] = value
    with pytest.raises(ToolkitError, match=expected):
        open_store(store_file).labels("train")
    assert any("labels lie outside" in p for p in verify_store(store_file))


def test_without_label_names_a_class_index_is_bounded_by_the_rows(tmp_path):
    rows = make_rows(6)
    spec = make_spec(rows, task={"kind": "multiclass"})
    path = write_all(store_path(tmp_path, spec), spec, rows)
    open_store(path).labels("train")  # 0..2 with 6 rows: sound
    with h5py.File(path, "r+") as handle:
        handle["train/labels"][1] = 7_000_000_000
    with pytest.raises(ToolkitError, match=r"but the store has 6 rows"):
        open_store(path).labels("train")


def _multilabel_store(tmp_path):
    rows = RowTable(
        ids=[f"x{i}" for i in range(6)],
        splits=["train"] * 4 + ["test"] * 2,
        labels=np.array([[0, 1], [1, 0], [1, 1], [0, 0], [1, 0], [0, 1]], np.int8),
        label_mask=np.array([[1, 1], [1, 0], [1, 1], [0, 1], [1, 1], [1, 1]], bool),
    )
    spec = make_spec(rows, task={"kind": "multilabel", "label_names": ["p", "q"]})
    return write_all(store_path(tmp_path, spec), spec, rows)


def test_multilabel_values_must_be_zero_or_one_where_the_mask_knows_them(tmp_path):
    path = _multilabel_store(tmp_path)
    assert open_store(path).labels("train").tolist()[0] == [0, 1]
    with h5py.File(path, "r+") as handle:
        handle["train/labels"][1, 1] = 9  # unknown (mask False): any value is tolerated
    open_store(path).labels("train")
    with h5py.File(path, "r+") as handle:
        handle["train/labels"][0, 0] = 9
    with pytest.raises(ToolkitError, match="1 known multi-label values are not 0 or 1"):
        open_store(path).labels("train")


def test_float16_embeddings_are_read_as_float32_equal_to_the_stored_values(store_file):
    store = open_store(store_file)
    stored = store.embeddings("test", "cls", dtype=None)
    as_float32 = store.embeddings("test", "cls")
    assert stored.dtype == np.float16 and as_float32.dtype == np.float32
    np.testing.assert_array_equal(as_float32, stored.astype(np.float32))


def test_a_store_written_before_checksums_still_reads_and_verify_says_so(tmp_path):
    rows = make_rows(8)
    spec = make_spec(rows)
    path = write_container2_store(store_path(tmp_path, spec), spec, rows)
    store = open_store(path)
    assert store.container_format == 2 and not store.checksummed and not store.outdated
    assert store.ids("train").tolist() == list(rows.ids[:4])
    np.testing.assert_array_equal(
        store.embeddings("test", "cls"), embeddings_for(np.arange(4, 8))["cls"].astype(np.float16)
    )
    assert verify_store(path) == []
    (note,) = verify_notes(path)
    assert "container format 2 carries no checksums" in note


def test_ids_that_are_not_text_are_refused_naming_the_dataset(tmp_path):
    rows = make_rows(8)
    spec = make_spec(rows)
    path = write_container2_store(store_path(tmp_path, spec), spec, rows)
    with h5py.File(path, "r+") as handle:
        del handle["train/ids"]
        handle.create_dataset("train/ids", data=[b"\xff\xfe"] * 4, dtype=h5py.string_dtype())
    with pytest.raises(ToolkitError, match=r"train/ids holds bytes that are not text"):
        open_store(path).ids("train")
    assert any("not text" in p for p in verify_store(path))


def test_embedding_rows_that_do_not_match_the_ids_are_refused(store_file):
    with h5py.File(store_file, "r+") as handle:
        values = handle["train/embeddings/cls"][:-1]
        del handle["train/embeddings/cls"]
        handle.create_dataset("train/embeddings/cls", data=values)
    with pytest.raises(ToolkitError, match=r"has 5 rows for 6 ids"):
        open_store(store_file).embeddings("train", "cls")
    assert any("5 rows for 6 ids" in p for p in verify_store(store_file))


def test_a_read_in_many_blocks_equals_one_read_and_counts_bad_rows_in_every_block(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(assemble_module, "CHUNK_ROWS", 2)
    monkeypatch.setattr(container_module, "READ_BLOCK_BYTES", 1)  # one chunk per block
    rows = make_rows(14)
    spec = make_spec(rows)
    path = write_all(store_path(tmp_path, spec), spec, rows, dim=8)
    with h5py.File(path, "r") as handle:
        assert handle["train/embeddings/cls"].chunks == (2, 8)
        whole = handle["train/embeddings/cls"][()].astype(np.float32)
    np.testing.assert_array_equal(open_store(path).embeddings("train", "cls"), whole)
    poisoned = whole.copy()
    poisoned[[0, 3, 6], 1] = [np.nan, np.inf, -np.inf]  # rows in the first, second, last block
    overwrite(path, "train/embeddings/cls", poisoned.astype(np.float16))
    with pytest.raises(ToolkitError, match="train/embeddings/cls: 3 rows hold NaN or Inf"):
        open_store(path).embeddings("train", "cls")
