"""The extraction loop end to end on real files: stores, skip, resume after SIGKILL, bad images."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medprobe.cache import ToolkitError, open_store, verify_store
from medprobe.cache.errors import Interrupted
from medprobe.cache.inventory.catalog import list_stores
from medprobe.extract.datasets import build_dataset
from medprobe.extract.pipeline import ExtractionOptions, extract_dataset
from tests.extract.conftest import tiny_vit_spec

FAST = dict(num_workers=0, progress=False, batch_size=4)


def test_two_models_in_one_pass_write_two_verified_stores(folder_dataset, tmp_path):
    dataset = build_dataset("folder", folder_dataset)
    specs = [tiny_vit_spec("vit-a"), tiny_vit_spec("vit-b", input_size=48)]
    report = extract_dataset(
        dataset,
        specs,
        cache_root=tmp_path / "c",
        options=ExtractionOptions(pretrained=False, **FAST),
    )
    assert len(report.written) == 2
    for path in report.written:
        assert verify_store(path) == []
        store = open_store(path)
        assert store.poolings == ("cls", "mean")
        n_rows = sum(len(store.ids(s)) for s in store.splits)
        assert n_rows == len(dataset.rows)
        assert store.embeddings("train", "cls").shape[1] == 32
        assert store.task["label_names"] == ["benign", "malignant"]


def test_second_run_is_a_no_op(folder_dataset, tmp_path, tiny_vit_weights, monkeypatch):
    dataset = build_dataset("folder", folder_dataset)
    options = ExtractionOptions(weights=tiny_vit_weights, **FAST)
    first = extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path, options=options)
    mtime = first.written[0].stat().st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError("a complete store must be skipped before any model is built")

    monkeypatch.setattr("medprobe.extract.pipeline.build_backbone", no_build)
    second = extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path, options=options)
    assert second.written == [] and second.skipped_complete == first.written
    assert first.written[0].stat().st_mtime_ns == mtime


def test_local_weights_are_loaded_and_keyed_by_content(folder_dataset, tmp_path, tiny_vit_weights):
    dataset = build_dataset("folder", folder_dataset)
    spec = tiny_vit_spec()
    with_weights = extract_dataset(
        dataset,
        [spec],
        cache_root=tmp_path,
        options=ExtractionOptions(weights=tiny_vit_weights, **FAST),
    )
    random_init = extract_dataset(
        dataset, [spec], cache_root=tmp_path, options=ExtractionOptions(pretrained=False, **FAST)
    )
    a, b = open_store(with_weights.written[0]), open_store(random_init.written[0])
    assert a.key != b.key
    assert "weights_sha256" in a.spec["model"] and a.spec["model"]["pretrained"] is True
    again = extract_dataset(
        dataset,
        [spec],
        cache_root=tmp_path / "again",
        options=ExtractionOptions(weights=tiny_vit_weights, **FAST),
    )
    np.testing.assert_array_equal(
        open_store(again.written[0]).embeddings("train", "cls"), a.embeddings("train", "cls")
    )


def _corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


def test_corrupt_image_stops_the_run_naming_the_file(folder_dataset, tmp_path):
    bad = folder_dataset / "malignant" / "002.png"
    _corrupt(bad)
    dataset = build_dataset("folder", folder_dataset)
    with pytest.raises(ToolkitError, match=r"002\.png") as caught:
        extract_dataset(
            dataset,
            [tiny_vit_spec()],
            cache_root=tmp_path,
            options=ExtractionOptions(pretrained=False, **FAST),
        )
    assert "--on-error skip" in str(caught.value)
    assert not any(e.complete for e in list_stores(tmp_path))


def test_ctrl_c_keeps_every_batch_already_computed(folder_dataset, tmp_path, monkeypatch):
    dataset = build_dataset("folder", folder_dataset)
    read_image = type(dataset).read_image
    calls = []

    def interrupted_at_the_ninth_image(self, row, **kwargs):
        calls.append(row)
        if len(calls) == 9:  # the first image of the third batch of 4
            raise KeyboardInterrupt
        return read_image(self, row, **kwargs)

    monkeypatch.setattr(type(dataset), "read_image", interrupted_at_the_ninth_image)
    with pytest.raises(Interrupted, match="8 of 12 rows kept; rerun the same command"):
        extract_dataset(
            dataset,
            [tiny_vit_spec()],
            cache_root=tmp_path,
            options=ExtractionOptions(pretrained=False, **FAST),
        )
    (entry,) = list_stores(tmp_path)
    # Batch 2 was computed but, written one batch behind, not yet stored when Ctrl-C came.
    assert entry.rows_done == 8 and not entry.complete


def test_corrupt_image_is_skipped_and_recorded(folder_dataset, tmp_path):
    _corrupt(folder_dataset / "malignant" / "002.png")
    (folder_dataset / "benign" / "004.png").unlink()
    (folder_dataset / "benign" / "004.png").write_text("not an image")
    dataset = build_dataset("folder", folder_dataset)
    report = extract_dataset(
        dataset,
        [tiny_vit_spec()],
        cache_root=tmp_path,
        options=ExtractionOptions(pretrained=False, on_error="skip", **FAST),
    )
    assert sorted(report.failures) == ["benign/004.png", "malignant/002.png"]
    store = open_store(report.written[0])
    assert sorted(i for i, _ in store.skipped()) == ["benign/004.png", "malignant/002.png"]
    all_ids = [i for s in store.splits for i in store.ids(s)]
    assert len(all_ids) == len(dataset.rows) - 2 and "malignant/002.png" not in all_ids
    assert verify_store(report.written[0]) == []


def test_limit_takes_a_spread_subset_keyed_apart(folder_dataset, tmp_path):
    dataset = build_dataset("folder", folder_dataset)
    report = extract_dataset(
        dataset,
        [tiny_vit_spec()],
        cache_root=tmp_path,
        options=ExtractionOptions(pretrained=False, limit=4, **FAST),
    )
    store = open_store(report.written[0])
    ids = [i for s in store.splits for i in store.ids(s)]
    assert len(ids) == 4 and {i.split("/")[0] for i in ids} == {"benign", "malignant"}


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from medprobe.extract.datasets import build_dataset
from medprobe.extract.pipeline import ExtractionOptions, extract_dataset
from medprobe.extract.models import Backbone
from tests.extract.conftest import tiny_vit_spec

slow_forward = Backbone.forward
def forward(self, images):
    time.sleep(0.05)   # slow enough that the parent can kill us between flushes
    return slow_forward(self, images)
Backbone.forward = forward
dataset = build_dataset("folder", Path(sys.argv[1]))
extract_dataset(dataset, [tiny_vit_spec()], cache_root=Path(sys.argv[2]),
                options=ExtractionOptions(weights=Path(sys.argv[3]), num_workers=0,
                                          batch_size=2, flush_rows=4, progress=False))
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path, tiny_vit_weights):
    from tests.extract.conftest import write_folder_dataset

    images = write_folder_dataset(tmp_path / "images", n_per_class=20)
    killed_root = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(images), str(killed_root), str(tiny_vit_weights)],
        env=env,
    )
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        journals = list(killed_root.glob("*/*.journal"))
        if journals and len(list(journals[0].glob("part-*.h5"))) >= 2:
            break
        time.sleep(0.05)
    assert child.poll() is None, "the child finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    entry = list_stores(killed_root)[0]
    assert not entry.complete and 0 < entry.rows_done < 40

    dataset = build_dataset("folder", images)
    options = ExtractionOptions(
        weights=tiny_vit_weights, num_workers=0, batch_size=2, flush_rows=4, progress=False
    )
    resumed = extract_dataset(dataset, [tiny_vit_spec()], cache_root=killed_root, options=options)
    clean = extract_dataset(
        dataset, [tiny_vit_spec()], cache_root=tmp_path / "clean", options=options
    )
    a, b = open_store(resumed.written[0]), open_store(clean.written[0])
    assert a.key == b.key
    for split in b.splits:
        assert a.ids(split).tolist() == b.ids(split).tolist()
        for pooling in b.poolings:
            np.testing.assert_array_equal(
                a.embeddings(split, pooling), b.embeddings(split, pooling)
            )
    assert verify_store(resumed.written[0]) == []


def test_pixel_cache_feeds_a_later_model_without_decoding(
    folder_dataset, tmp_path, tiny_vit_weights, monkeypatch
):
    dataset = build_dataset("folder", folder_dataset)
    root = tmp_path / "c"
    first = extract_dataset(
        dataset,
        [tiny_vit_spec("vit-a")],
        cache_root=root,
        options=ExtractionOptions(pretrained=False, cache_pixels=True, **FAST),
    )
    assert len(first.written) == 1, "the pixel cache is not reported as an embedding store"
    assert [e.model for e in list_stores(root)] == ["vit-a (random init)"], "no pixel caches"

    def no_decode(*args, **kwargs):
        raise AssertionError("a complete pixel cache must replace decoding")

    monkeypatch.setattr(type(dataset), "read_image", no_decode)
    from_cache = extract_dataset(
        dataset,
        [tiny_vit_spec("vit-b")],
        cache_root=root,
        options=ExtractionOptions(weights=tiny_vit_weights, **FAST),
    )
    monkeypatch.undo()
    decoded = extract_dataset(
        dataset,
        [tiny_vit_spec("vit-b")],
        cache_root=tmp_path / "d",
        options=ExtractionOptions(weights=tiny_vit_weights, **FAST),
    )
    a, b = open_store(from_cache.written[0]), open_store(decoded.written[0])
    for split in b.splits:
        assert a.ids(split).tolist() == b.ids(split).tolist()
        np.testing.assert_array_equal(a.embeddings(split, "cls"), b.embeddings(split, "cls"))


def test_one_pass_for_two_models_equals_two_single_passes(folder_dataset, tmp_path):
    # Random-init weights are seeded by the registry: the same whatever else was built first.
    dataset = build_dataset("folder", folder_dataset)
    options = ExtractionOptions(pretrained=False, **FAST)
    small, big = tiny_vit_spec("vit-32"), tiny_vit_spec("vit-48", input_size=48)
    together = extract_dataset(dataset, [small, big], cache_root=tmp_path / "one", options=options)
    for spec, path in zip((small, big), together.written, strict=True):
        (alone,) = extract_dataset(
            dataset, [spec], cache_root=tmp_path / spec.name, options=options
        ).written
        a, b = open_store(path), open_store(alone)
        for split in b.splits:
            for pooling in b.poolings:
                np.testing.assert_array_equal(
                    a.embeddings(split, pooling), b.embeddings(split, pooling)
                )


def test_a_rerun_adds_metadata_to_an_earlier_store_keeping_key_and_embeddings(
    folder_dataset, tmp_path, tiny_vit_weights, monkeypatch
):
    """Metadata is outside the key: a store extracted before the adapter recorded it gains it on
    the next `extract run`, with no model built and every embedding byte as it was."""
    dataset = build_dataset("folder", folder_dataset)
    options = ExtractionOptions(weights=tiny_vit_weights, **FAST)
    first = extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path, options=options)
    before = open_store(first.written[0])
    embeddings = {s: before.embeddings(s, "cls", dtype=None).tobytes() for s in before.splits}
    views = ["CC" if i % 2 else "MLO" for i in range(len(dataset.rows))]
    dataset.rows = replace(dataset.rows, metadata={"view": views})

    def no_build(*args, **kwargs):
        raise AssertionError("adding metadata must not build a model")

    monkeypatch.setattr("medprobe.extract.pipeline.build_backbone", no_build)
    second = extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path, options=options)
    after = open_store(second.skipped_complete[0])
    assert after.path == before.path and after.key == before.key
    assert after.metadata_columns == ("view",)
    assert {s: after.embeddings(s, "cls", dtype=None).tobytes() for s in after.splits} == embeddings
    view_of = dict(zip(dataset.rows.ids, views, strict=True))
    assert after.metadata("test")["view"].tolist() == [view_of[i] for i in after.ids("test")]
