"""Which stores a sweep takes: unfinished stores named, duplicate model names told apart."""

import json
import logging
import shutil

import pytest

from medprobe.cache import ToolkitError
from medprobe.probe.targets import select_targets
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
    with caplog.at_level(logging.WARNING, logger="medprobe.probe.targets"):
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
    with caplog.at_level(logging.WARNING, logger="medprobe.probe.targets"):
        targets = select_targets(root)
    assert [t.model for t in targets] == ["new"]
    assert "store format 1" in caplog.text and "extract again" in caplog.text
    assert str(old) in caplog.text


def test_only_outdated_stores_is_an_error_that_counts_them(tmp_path):
    root = tmp_path / "embeddings"
    written_by_format_1(write_blob_store(root, model="old", separation=1.0))
    with pytest.raises(ToolkitError, match=r"no complete stores .*\(1 outdated\)"):
        select_targets(root)


def _mark_trial(path, limit=50):
    """As `extract run --limit` leaves a store: the limit recorded in `info` (not in the key)."""
    import h5py

    with h5py.File(path, "r+") as handle:
        handle.attrs["info"] = json.dumps({"limit": limit})


def test_two_copies_of_one_store_are_refused_naming_both_files(tmp_path):
    root = tmp_path / "embeddings"
    store = write_blob_store(root, model="dino", separation=1.0)
    copy = store.with_name("dino-copy.h5")
    shutil.copy(store, copy)
    with pytest.raises(ToolkitError) as raised:
        select_targets(root)
    message = str(raised.value)
    assert "2 files hold one store" in message and str(store) in message
    assert message.endswith(f"`cache rm {copy}`")


def test_a_renamed_store_is_probed_by_its_key_with_a_warning_naming_its_name(tmp_path, caplog):
    root = tmp_path / "embeddings"
    store = write_blob_store(root, model="dino", separation=1.0)
    renamed = store.with_name("best-model.h5")
    store.rename(renamed)
    with caplog.at_level(logging.WARNING, logger="medprobe.probe.targets"):
        (target,) = select_targets(root)
    assert target.path == renamed and target.model == "dino"
    assert str(renamed) in caplog.text and f"should be named {store}" in caplog.text


def test_trial_stores_are_left_out_unless_asked_for(tmp_path, caplog):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="dino", separation=1.0)
    trial = write_blob_store(root, model="dino", separation=1.0, n_train=20, n_test=10)
    _mark_trial(trial)
    with caplog.at_level(logging.WARNING, logger="medprobe.probe.targets"):
        targets = select_targets(root)
    assert [t.path for t in targets] != [trial] and len(targets) == 1
    assert "left out 1 trial store(s)" in caplog.text and trial.name in caplog.text
    # Asked for, the trial is probed (and found not comparable with the full store).
    with pytest.raises(ToolkitError, match="disagree on the"):
        select_targets(root, include_trials=True)
    other = write_blob_store(root, model="mae", separation=1.0, dataset="tiny", n_train=20)
    _mark_trial(other)
    assert [t.model for t in select_targets(root, datasets=["tiny"], include_trials=True)] == [
        "mae"
    ]


def test_a_model_with_only_a_trial_store_says_so(tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="dino", separation=1.0)
    _mark_trial(write_blob_store(root, model="mae", separation=1.0))
    with pytest.raises(ToolkitError, match=r"only store for .mae. is a trial.*include_trials=True"):
        select_targets(root, models=["mae"])


def test_only_trial_stores_is_an_error_that_counts_them(tmp_path):
    root = tmp_path / "embeddings"
    _mark_trial(write_blob_store(root, model="dino", separation=1.0))
    with pytest.raises(
        ToolkitError, match=r"\(1 trial\); run `extract run` first, pass include_trials=True"
    ):
        select_targets(root)


@pytest.mark.parametrize("content", [b"not hdf5 at all", b""])
def test_a_foreign_or_damaged_file_is_warned_about_and_the_rest_probed(tmp_path, caplog, content):
    root = tmp_path / "embeddings"
    store = write_blob_store(root, model="dino", separation=1.0)
    stray = store.parent / "downloaded.h5"
    stray.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="medprobe.probe.targets"):
        targets = select_targets(root)
    assert [t.path for t in targets] == [store]
    assert f"not probed, {stray}: not a store" in caplog.text
