"""The extraction loop under bad options, Ctrl-C, a full disk, a busy pixel cache and replaced
images: one clear error or the right result, and never a store shown complete that is not."""

import errno
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.cache import ToolkitError, open_store, verify_store
from medprobe.cache.files.paths import journal_dir, lock_path, store_path
from medprobe.cache.inventory.catalog import list_stores
from medprobe.cache.lock import StoreLock
from medprobe.extract import options as options_module
from medprobe.extract import pipeline
from medprobe.extract.datasets import build_dataset
from medprobe.extract.models.registry import RANDOM_INIT_SEED
from medprobe.extract.pipeline import ExtractionOptions, extract_dataset
from medprobe.extract.plan import pixel_cache_root, pixel_store_spec
from tests.extract.conftest import tiny_vit_spec, write_folder_dataset

FAST = dict(num_workers=0, progress=False, batch_size=4)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(device="tpu"), "device='tpu': choose auto, cpu, cuda, cuda:N or mps"),
        (dict(device="cuda:x"), "device='cuda:x'"),
        (dict(num_workers=-1), "num_workers=-1: must be 0"),
        (dict(batch_size=0), "batch_size=0: must be a whole number of at least 1"),
        (dict(batch_size=2.5), "batch_size=2.5: must be a whole number"),
        (dict(flush_rows=0), "flush_rows=0: must be"),
        (dict(dtype="float64"), "dtype='float64': choose one of ['float16', 'float32']"),
        (dict(limit=0), "limit=0: must be at least 1 image"),
        (dict(decode="x"), "decode='x': choose one of ['cpu', 'gpu']"),
        (dict(on_error="x"), "on_error='x': choose one of ['fail', 'skip']"),
        (dict(shard=(3, 3)), "shard=(3, 3): expected (i, n) with 0 <= i < n"),
        (dict(weights=Path("/nonexistent.pth")), "weights=/nonexistent.pth: no such file"),
        (dict(weights=Path(__file__), pretrained=False), "and a random init was asked for"),
    ],
)
def test_bad_options_are_refused_when_made_naming_the_argument(changes, message):
    with pytest.raises(ToolkitError) as caught:
        ExtractionOptions(**changes)
    assert message in str(caught.value)
    assert caught.value.argument == next(iter(changes))


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_a_device_this_machine_lacks_is_refused_before_any_store(folder_dataset, tmp_path):
    dataset = build_dataset("folder", folder_dataset)
    options = ExtractionOptions(device="cuda", pretrained=False, **FAST)
    with pytest.raises(ToolkitError, match="device='cuda': CUDA is not available here"):
        extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path / "c", options=options)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([], "no model to run"),
        ([tiny_vit_spec("a"), tiny_vit_spec("a")], "model 'a' is named twice"),
    ],
)
def test_models_are_checked_before_any_work(folder_dataset, tmp_path, specs, message):
    dataset = build_dataset("folder", folder_dataset)
    options = ExtractionOptions(pretrained=False, **FAST)
    with pytest.raises(ToolkitError, match=message):
        extract_dataset(dataset, specs, cache_root=tmp_path / "c", options=options)
    assert not (tmp_path / "c").exists()


def test_a_cache_root_that_is_a_file_is_refused(folder_dataset, tmp_path):
    dataset = build_dataset("folder", folder_dataset)
    root = tmp_path / "embeddings.h5"
    root.write_text("not a folder")
    with pytest.raises(
        ToolkitError, match=r"cannot write stores into .*embeddings\.h5/folder \(Not a directory\)"
    ):
        extract_dataset(
            dataset,
            [tiny_vit_spec()],
            cache_root=root,
            options=ExtractionOptions(pretrained=False, **FAST),
        )


def test_an_unwritable_cache_is_refused_before_any_model_is_built(
    folder_dataset, tmp_path, monkeypatch
):
    dataset = build_dataset("folder", folder_dataset)

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    def no_build(*args, **kwargs):
        raise AssertionError("the cache folder is checked before a model is built")

    monkeypatch.setattr(options_module.tempfile, "TemporaryFile", read_only)
    monkeypatch.setattr(pipeline, "build_backbone", no_build)
    with pytest.raises(ToolkitError, match=r"cannot write stores into .* \(Permission denied\)"):
        extract_dataset(
            dataset,
            [tiny_vit_spec()],
            cache_root=tmp_path / "c",
            options=ExtractionOptions(pretrained=False, **FAST),
        )


def test_a_model_that_cannot_be_built_leaves_no_journal(folder_dataset, tmp_path):
    dataset = build_dataset("folder", folder_dataset)
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("hello")
    with pytest.raises(ToolkitError, match=re.escape(f"weights={not_a_checkpoint}: not a")):
        extract_dataset(
            dataset,
            [tiny_vit_spec()],
            cache_root=tmp_path / "c",
            options=ExtractionOptions(weights=not_a_checkpoint, **FAST),
        )
    assert list((tmp_path / "c").rglob("*.journal")) == [] and list_stores(tmp_path / "c") == []


SIGINT_SCRIPT = """
import sys, time
from pathlib import Path
from medprobe.cache.console import run_app
from medprobe.extract.cli import app
from medprobe.extract.models import Backbone, default_registry
from tests.extract.conftest import tiny_vit_spec

default_registry().register(tiny_vit_spec())
marker, calls, forward = Path(sys.argv[1]), [], Backbone.forward
def slow_forward(self, images):
    calls.append(1)
    if len(calls) == 4:
        marker.touch()  # the parent presses Ctrl-C now
    time.sleep(0.1)
    return forward(self, images)
Backbone.forward = slow_forward
run_app(app, sys.argv[2:])
"""


@pytest.mark.slow
def test_ctrl_c_exits_130_saying_how_many_rows_were_kept(tmp_path):
    images = write_folder_dataset(tmp_path / "images", n_per_class=20)
    cache = tmp_path / "c"
    marker = tmp_path / "press-ctrl-c"
    args = ["run", "--model", "tiny-vit", "--dataset", "folder", "--data-dir", str(images)]
    args += ["--cache-dir", str(cache), "--no-pretrained", "--workers", "1", "--batch-size", "2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "COLUMNS": "300"}
    child = subprocess.Popen(
        [sys.executable, "-c", SIGINT_SCRIPT, str(marker), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
    )
    deadline = time.time() + 120
    while not marker.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert child.poll() is None, "the child finished before Ctrl-C"
    os.killpg(child.pid, signal.SIGINT)  # the loader worker gets it too, as in a terminal
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    kept = re.fullmatch(
        r"interrupted: (\d+) of 40 rows kept; rerun the same command to resume", last_line
    )
    assert kept, stderr
    (entry,) = list_stores(cache)
    assert entry.rows_done == int(kept[1]) > 0 and not entry.complete
    dataset = build_dataset("folder", images)
    resumed = extract_dataset(
        dataset,
        [tiny_vit_spec()],
        cache_root=cache,
        options=ExtractionOptions(pretrained=False, **FAST),
    )
    assert verify_store(resumed.written[0]) == [], "the same command resumes it"


def test_a_full_disk_is_one_error_and_the_loader_shuts_down(folder_dataset, tmp_path, monkeypatch):
    from medprobe.cache import writer as writer_module

    real_write, writes = writer_module.write_part, []

    def disk_fills_up(target, **content):
        writes.append(target)
        if len(writes) > 1:  # the first journal part fits
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return real_write(target, **content)

    monkeypatch.setattr(writer_module, "write_part", disk_fills_up)
    dataset = build_dataset("folder", folder_dataset)
    options = ExtractionOptions(
        pretrained=False, num_workers=2, batch_size=2, flush_rows=2, progress=False
    )
    with pytest.raises(ToolkitError, match=r"(?i)no space left on the device") as caught:
        extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path, options=options)
    assert "rerun: it resumes at row 2 of 12" in str(caught.value)
    assert caught.value.__suppress_context__, (
        "one error: the writes that failed after it are not chained"
    )
    assert multiprocessing.active_children() == [], "the loader's workers are shut down"
    (entry,) = list_stores(tmp_path)
    assert entry.rows_done == 2 and not entry.complete
    monkeypatch.undo()  # space freed: the same call resumes and completes
    resumed = extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path, options=options)
    assert verify_store(resumed.written[0]) == []


def test_a_second_run_with_cache_pixels_reads_the_cache_and_leaves_no_journal(
    folder_dataset, tmp_path, monkeypatch
):
    dataset = build_dataset("folder", folder_dataset)
    options = ExtractionOptions(pretrained=False, cache_pixels=True, **FAST)
    extract_dataset(dataset, [tiny_vit_spec("vit-a")], cache_root=tmp_path, options=options)

    def no_decode(*args, **kwargs):
        raise AssertionError("the complete pixel cache replaces decoding")

    monkeypatch.setattr(type(dataset), "read_image", no_decode)
    second = extract_dataset(
        dataset, [tiny_vit_spec("vit-b")], cache_root=tmp_path, options=options
    )
    assert len(second.written) == 1 and verify_store(second.written[0]) == []
    assert list(tmp_path.rglob("*.journal")) == []


def test_a_pixel_cache_another_run_is_writing_is_left_to_it(folder_dataset, tmp_path):
    dataset = build_dataset("folder", folder_dataset)
    spec = tiny_vit_spec()
    rows = np.arange(len(dataset.rows))
    pixel_spec = pixel_store_spec(
        dataset, dataset.rows, spec.preprocessing, sources=dataset.sources_fingerprint(rows)
    )
    pixels = store_path(pixel_cache_root(tmp_path), pixel_spec)
    options = ExtractionOptions(pretrained=False, cache_pixels=True, **FAST)
    with StoreLock(lock_path(pixels)):  # the other run, writing the same pixel cache
        report = extract_dataset(dataset, [spec], cache_root=tmp_path, options=options)
    assert len(report.written) == 1 and verify_store(report.written[0]) == []
    assert not pixels.exists() and not journal_dir(pixels).exists()


def test_images_replaced_under_the_same_names_get_a_new_store(folder_dataset, tmp_path):
    options = ExtractionOptions(pretrained=False, **FAST)
    first = extract_dataset(
        build_dataset("folder", folder_dataset),
        [tiny_vit_spec()],
        cache_root=tmp_path,
        options=options,
    )
    for path in sorted(folder_dataset.rglob("*.png"))[:3]:
        Image.new("RGB", (40, 48), (255, 0, 0)).save(path)
    second = extract_dataset(
        build_dataset("folder", folder_dataset),
        [tiny_vit_spec()],
        cache_root=tmp_path,
        options=options,
    )
    assert second.skipped_complete == [] and second.written[0] != first.written[0]
    old, new = open_store(first.written[0]), open_store(second.written[0])
    assert old.spec["dataset"]["fingerprint"] == new.spec["dataset"]["fingerprint"]
    assert old.spec["dataset"]["sources"] != new.spec["dataset"]["sources"]


def test_random_init_is_keyed_by_its_seed(folder_dataset, tmp_path):
    dataset = build_dataset("folder", folder_dataset)
    a = extract_dataset(
        dataset,
        [tiny_vit_spec()],
        cache_root=tmp_path / "a",
        options=ExtractionOptions(pretrained=False, **FAST),
    )
    torch.manual_seed(123)  # whatever the caller's global state, the init is the same
    b = extract_dataset(
        dataset,
        [tiny_vit_spec()],
        cache_root=tmp_path / "b",
        options=ExtractionOptions(pretrained=False, **FAST),
    )
    first, second = open_store(a.written[0]), open_store(b.written[0])
    assert first.spec["model"]["init_seed"] == RANDOM_INIT_SEED
    for split in first.splits:
        np.testing.assert_array_equal(
            first.embeddings(split, "cls"), second.embeddings(split, "cls")
        )


def test_embedding_rows_reads_chosen_rows_in_the_order_asked(folder_dataset, tmp_path):
    dataset = build_dataset("folder", folder_dataset)
    report = extract_dataset(
        dataset,
        [tiny_vit_spec()],
        cache_root=tmp_path,
        options=ExtractionOptions(pretrained=False, **FAST),
    )
    store = open_store(report.written[0])
    every = store.embeddings("train", "mean", dtype=None)
    rows = np.array([len(every) - 1, 0, 2, 0])  # unsorted, with a repeat
    np.testing.assert_array_equal(store.embedding_rows("train", "mean", rows), every[rows])
