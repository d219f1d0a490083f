"""`mp.stores()` and `mp.load()`: the cache as a notebook reads it."""

import re

import numpy as np
import pytest

from medprobe.cache import ToolkitError, open_store
from medprobe.cache.inventory.frames import load, stores
from tests.probe.conftest import write_blob_store


def test_stores_lists_every_store_with_its_shape_and_status(tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="a", separation=1.0, n_val=20)
    write_blob_store(root, model="b", separation=1.0, n_val=20, complete=False)
    table = stores(root).set_index("model")
    assert table.loc["a", ["train", "val", "test", "dim", "dtype", "status"]].tolist() == [
        200,
        20,
        100,
        16,
        "float16",
        "complete",
    ]
    assert table.loc["b", "status"].startswith("incomplete (")
    assert stores(tmp_path / "nothing").empty


def test_load_returns_the_stores_arrays(tmp_path):
    root = tmp_path / "embeddings"
    path = write_blob_store(root, model="m", separation=1.0, n_labels=3, dataset="chest")
    X, y, ids = load(root, dataset="chest", model="m", split="test")
    store = open_store(path)
    assert X.dtype == np.float32 and X.shape == (100, 16)
    assert np.array_equal(ids, store.ids("test"))
    expected = np.where(store.label_mask("test"), store.labels("test"), -1)
    assert np.array_equal(y, expected) and (y == -1).any()
    frame = store.to_frame("test")
    assert frame.index.name == "id" and list(frame.index) == list(ids)
    assert list(frame.columns[:3]) == ["finding0", "finding1", "finding2"]
    assert frame["finding0"].isna().sum() == (expected[:, 0] == -1).sum()
    assert np.allclose(frame[[f"e{i}" for i in range(16)]].to_numpy(), X)


def test_load_errors_name_the_argument_and_the_choices(tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="m", separation=1.0)
    write_blob_store(root, model="twin", separation=1.0, preprocessing={"size": 1})
    write_blob_store(root, model="twin", separation=1.0, preprocessing={"size": 2})
    cases = [
        ({"dataset": "blob", "model": "m"}, "dataset", "did you mean blobs"),
        ({"dataset": "blobs", "model": "x"}, "model", "models: m, twin"),
        ({"dataset": "blobs", "model": "twin"}, "model", "2 blobs stores of this model"),
        ({"dataset": "blobs", "model": "m", "pooling": "mean"}, "pooling", "holds ['cls']"),
        ({"dataset": "blobs", "model": "m", "split": "val"}, "split", "holds ['train', 'test']"),
    ]
    for arguments, argument, message in cases:
        with pytest.raises(ToolkitError, match=re.escape(message)) as raised:
            load(root, **arguments)
        assert raised.value.argument == argument
    key = stores(root).query("model == 'twin'")["key"].iloc[0]
    X, _, _ = load(root, dataset="blobs", model=f"twin@{key[:8]}")
    assert X.shape == (200, 16)
