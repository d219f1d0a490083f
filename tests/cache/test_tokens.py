"""Token grids in a store: written through the journal and assembly like embeddings, read by rows
only, checked like embeddings (checksums, NaN/Inf, rows per id), and keyed."""

import h5py
import numpy as np
import pytest

import medprobe.cache.layout.tokens as tokens_module
from medprobe.cache import StoreWriter, ToolkitError, open_store, store_path
from medprobe.cache.inventory.verify import verify_store
from medprobe.cache.layout.tokens import TokenLayout
from tests.cache.conftest import embeddings_for, flip_bytes, make_rows, make_spec
from tests.probe.conftest import write_blob_store

LAYOUT = {"grid": [2, 3], "prefix_tokens": 1, "dim": 4, "max_side": 3}


def tokens_for(rows: np.ndarray) -> np.ndarray:
    """(n, 7, 4) distinct per row and position, exact in float16."""
    return (rows[:, None, None] * 100.0 + np.arange(7)[None, :, None] * 4.0 + np.arange(4)).astype(
        np.float32
    )


def write_token_store(tmp_path, *, n_rows=10, flush_rows=3, batch=2, failed_rows=()):
    rows = make_rows(n_rows)
    spec = make_spec(rows, tokens=LAYOUT)
    path = store_path(tmp_path, spec)
    with StoreWriter(path, spec, rows, flush_rows=flush_rows) as writer:
        for start in range(0, n_rows, batch):
            stop = min(start + batch, n_rows)
            ok = np.array([r not in failed_rows for r in range(start, stop)])
            kept = np.arange(start, stop)[ok]
            failures = {int(r): "bad" for r in range(start, stop) if r in failed_rows}
            writer.append(
                start, ok, embeddings_for(kept), failures, tokens=tokens_for(kept.astype(float))
            )
        writer.finish()
    return path


def test_tokens_are_stored_one_image_per_chunk_with_their_layout_and_read_back_by_rows(tmp_path):
    path = write_token_store(tmp_path, failed_rows=(3,))
    store = open_store(path)
    assert store.has_tokens and store.token_shape == (7, 4)
    assert store.token_layout == {"grid": (2, 3), "prefix_tokens": 1}
    train_rows = np.array([r for r in range(5) if r != 3])  # the train split, row 3 skipped
    with h5py.File(path, "r") as handle:
        dataset = handle["train/tokens"]
        assert dataset.shape == (4, 7, 4) and dataset.dtype == np.float16
        assert dataset.chunks == (1, 7, 4) and dataset.fletcher32
        assert list(dataset.attrs["token_grid"]) == [2, 3] and dataset.attrs["prefix_tokens"] == 1
    expected = tokens_for(train_rows.astype(float))
    whole = store.tokens("train", slice(None))
    assert whole.dtype == np.float32 and np.array_equal(whole, expected)
    assert np.array_equal(store.tokens("train", slice(1, 3)), expected[1:3])
    picked = np.array([3, 0, 3, 2])  # any order, repeats allowed
    assert np.array_equal(store.tokens("train", picked), expected[picked])
    assert store.tokens("test", np.array([], dtype=int)).shape == (0, 7, 4)
    assert verify_store(path) == []


def test_reads_in_many_blocks_equal_one_read(tmp_path, monkeypatch):
    path = write_token_store(tmp_path, n_rows=20)
    store = open_store(path)
    whole = store.tokens("train", slice(None))
    monkeypatch.setattr(tokens_module, "READ_IMAGES", 3)
    assert np.array_equal(store.tokens("train", slice(None)), whole)
    order = np.random.default_rng(0).permutation(10)
    assert np.array_equal(store.tokens("train", order), whole[order])


def test_tokens_are_keyed_and_a_store_without_them_keeps_its_key():
    rows = make_rows()
    plain = make_spec(rows)
    assert "tokens" not in plain.as_dict()  # every store written before tokens keeps its key
    with_tokens = make_spec(rows, tokens=LAYOUT)
    other_side = make_spec(rows, tokens={**LAYOUT, "grid": [3, 3], "max_side": 4})
    assert len({plain.key(), with_tokens.key(), other_side.key()}) == 3


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"grid": [2, 3], "dim": 4}, r"lacks \['prefix_tokens'\]"),
        ({"grid": [0, 3], "prefix_tokens": 0, "dim": 4}, r"grid height=0: must be at least 1"),
        ({"grid": [2], "prefix_tokens": 0, "dim": 4}, r"must be \[height, width\]"),
        ({"grid": [2, 2], "prefix_tokens": -1, "dim": 4}, r"prefix_tokens=-1"),
        ({"grid": [2, 2.5], "prefix_tokens": 0, "dim": 4}, r"grid width=2.5: must be an integer"),
    ],
)
def test_a_malformed_layout_is_refused_naming_the_value(layout, message):
    with pytest.raises(ToolkitError, match=message):
        make_spec(make_rows(), tokens=layout)


def test_bytes_per_image_is_float16_of_every_token():
    # ViT-L at 8 x 8: (1 + 64) x 1024 float16 = 130 KiB.
    assert TokenLayout(grid=(8, 8), prefix_tokens=1, dim=1024).bytes_per_image == 133_120


def test_appends_must_match_the_layout(tmp_path):
    rows = make_rows(4)
    spec = make_spec(rows, tokens=LAYOUT)
    with StoreWriter(store_path(tmp_path, spec), spec, rows) as writer:
        ok = np.ones(2, bool)
        with pytest.raises(ValueError, match="tokens missing"):
            writer.append(0, ok, embeddings_for(np.arange(2)))
        with pytest.raises(ValueError, match=r"expected \(2, 7, 4\)"):
            writer.append(0, ok, embeddings_for(np.arange(2)), tokens=np.zeros((2, 6, 4)))
        overflow = tokens_for(np.arange(2.0))
        overflow[1, 2, 0] = 1e6  # beyond float16
        with pytest.raises(ToolkitError, match=r"tokens of 1 image\(s\) are NaN/Inf.*img/001"):
            writer.append(0, ok, embeddings_for(np.arange(2)), tokens=overflow)
        assert writer.next_row == 0  # nothing half-appended
    plain = make_spec(rows)
    with (
        StoreWriter(store_path(tmp_path, plain), plain, rows) as writer,
        pytest.raises(ValueError, match="tokens given"),
    ):
        writer.append(0, ok, embeddings_for(np.arange(2)), tokens=tokens_for(np.arange(2.0)))


def test_a_truncated_token_entry_is_one_line_naming_the_store_and_the_fix(tmp_path):
    path = write_token_store(tmp_path)
    with h5py.File(path, "r+") as handle:
        values = handle["train/tokens"][:-1]
        del handle["train/tokens"]
        handle.create_dataset("train/tokens", data=values)
    with pytest.raises(ToolkitError, match=r"train/tokens has shape \(4, 7, 4\).*cache rm") as err:
        open_store(path).tokens("train", slice(0, 2))
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert any("train/tokens" in p for p in verify_store(path))


def test_damaged_token_bytes_fail_the_checksum(tmp_path):
    path = write_token_store(tmp_path)
    flip_bytes(path, "test/tokens")
    store = open_store(path)
    with pytest.raises(ToolkitError, match=r"checksum mismatch in .* test/tokens.*cache rm"):
        store.tokens("test", np.array([0]))
    assert np.array_equal(store.tokens("test", slice(1, 3)), tokens_for(np.arange(6.0, 8.0)))
    assert any("checksum mismatch" in p and "tokens" in p for p in verify_store(path))


def test_a_store_without_tokens_says_how_to_get_them(tmp_path):
    rows = make_rows(4)
    spec = make_spec(rows)
    path = store_path(tmp_path, spec)
    with StoreWriter(path, spec, rows) as writer:
        writer.append(0, np.ones(4, bool), embeddings_for(np.arange(4)))
        writer.finish()
    store = open_store(path)
    assert not store.has_tokens and store.token_shape is None and store.token_layout is None
    with pytest.raises(ToolkitError, match=r"holds no tokens.*extract run --tokens"):
        store.tokens("train", slice(None))


def test_rows_outside_the_split_are_refused(tmp_path):
    path = write_token_store(tmp_path)
    with pytest.raises(ToolkitError, match="row 5 is outside the split's 5 rows"):
        open_store(path).tokens("train", np.array([0, 5]))


@pytest.mark.parametrize("token_signal", ["spread", "one"])
def test_blob_store_tokens_carry_the_class_signal_as_asked(tmp_path, token_signal):
    path = write_blob_store(
        tmp_path, model="m", separation=3.0, n_train=40, n_test=10, dim=8, tokens=3,
        prefix_tokens=2, token_signal=token_signal,
    )  # fmt: skip
    store = open_store(path)
    assert store.token_shape == (2 + 9, 8)
    assert store.token_layout == {"grid": (3, 3), "prefix_tokens": 2}
    tokens = store.tokens("train", slice(None))
    cls = store.embeddings("train", "cls")
    assert np.allclose(tokens[:, 0], cls) and np.allclose(tokens[:, 1], cls)
    # The signal's share of the grid's variance across images: every position, or one of nine.
    grid = tokens[:, 2:]
    strongest = np.sort(np.linalg.norm(grid - grid.mean(axis=0), axis=2), axis=1)
    ratio = strongest[:, -1].mean() / strongest[:, :-1].mean()
    assert ratio > 2.0 if token_signal == "one" else ratio < 1.5
