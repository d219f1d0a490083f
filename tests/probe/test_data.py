"""Which stores a sweep takes: unfinished stores named, duplicate model names told apart."""

import logging

import pytest

from medprobe.cache import ToolkitError
from medprobe.probe.data import select_targets
from tests.probe.conftest import write_blob_store


def test_a_model_whose_store_is_unfinished_is_named_with_its_progress(tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="done", separation=1.0)
    write_blob_store(root, model="halfway", separation=1.0, complete=False)
    with pytest.raises(ToolkitError, match=r"'halfway'.*not complete \(150 of 300 rows written\)"):
        select_targets(root, models=["halfway"])


def test_an_unfinished_store_is_skipped_with_a_warning_when_others_are_complete(tmp_path, caplog):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="done", separation=1.0)
    write_blob_store(root, model="halfway", separation=1.0, complete=False)
    with caplog.at_level(logging.WARNING, logger="medprobe.probe.data"):
        targets = select_targets(root)
    assert [t.model for t in targets] == ["done"]
    assert "not complete" in caplog.text and "150 of 300" in caplog.text


def test_only_unfinished_stores_is_an_error_that_counts_them(tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="halfway", separation=1.0, complete=False)
    with pytest.raises(ToolkitError, match=r"no complete stores .*\(1 unfinished\)"):
        select_targets(root)


def test_two_stores_of_one_model_are_labelled_by_key(tmp_path):
    root = tmp_path / "embeddings"
    first = write_blob_store(root, model="dino", separation=1.0, preprocessing={"size": 224})
    second = write_blob_store(root, model="dino", separation=1.0, preprocessing={"size": 518})
    write_blob_store(root, model="mae", separation=1.0)
    labels = sorted(t.model for t in select_targets(root))
    from medprobe.cache import open_store

    keys = sorted(open_store(p).key[:8] for p in (first, second))
    assert labels == sorted([f"dino@{keys[0]}", f"dino@{keys[1]}", "mae"])


def test_unknown_dataset_suggests_the_closest_name(tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="m", separation=1.0, dataset="isic2019")
    with pytest.raises(ToolkitError, match="did you mean isic2019"):
        select_targets(root, datasets=["isic2018"])


def written_by_format_1(path):
    """As an earlier toolkit (store format 1) left the file."""
    import json

    import h5py

    with h5py.File(path, "r+") as handle:
        spec = json.loads(handle.attrs["spec"])
        handle.attrs["spec"] = json.dumps({**spec, "format_version": 1})


def test_a_store_of_an_earlier_format_is_skipped_with_what_to_do(tmp_path, caplog):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="new", separation=1.0)
    old = write_blob_store(root, model="old", separation=1.0)
    written_by_format_1(old)
    with caplog.at_level(logging.WARNING, logger="medprobe.probe.data"):
        targets = select_targets(root)
    assert [t.model for t in targets] == ["new"]
    assert "store format 1" in caplog.text and "extract again" in caplog.text
    assert str(old) in caplog.text


def test_only_outdated_stores_is_an_error_that_counts_them(tmp_path):
    root = tmp_path / "embeddings"
    written_by_format_1(write_blob_store(root, model="old", separation=1.0))
    with pytest.raises(ToolkitError, match=r"no complete stores .*\(1 outdated\)"):
        select_targets(root)
