"""Sharded extraction: which shard a launcher's environment means, and shard stores streamed into
the store one process writes (same key, rows, split order, skipped records, layout)."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from medprobe.cache import ToolkitError, open_store, store_path
from medprobe.cache.errors import Interrupted
from medprobe.cache.files.paths import lock_path
from medprobe.cache.inventory.catalog import list_stores
from medprobe.cache.lock import StoreLock
from medprobe.cache.reader import Store
from medprobe.extract.datasets import build_dataset
from medprobe.extract.models import resolve_model
from medprobe.extract.pipeline import ExtractionOptions, extract_dataset
from medprobe.extract.plan import plan_store
from medprobe.extract.scaleout import shards
from medprobe.extract.scaleout.shards import parse_shard, resolve_shard, shard_device
from tests.extract.conftest import (
    TEST_VIT,
    assert_matches_single_run,
    tiny_vit_spec,
    write_folder_dataset,
)

FAST = dict(num_workers=0, progress=False, batch_size=4)
# Attributes that record when a store was written, not what it holds.
TIMESTAMPS = {"created_at", "finished_at"}


def environ(text: str) -> dict[str, str]:
    """'RANK=1 WORLD_SIZE=2' -> {'RANK': '1', 'WORLD_SIZE': '2'}: a launcher's variables."""
    return dict(pair.split("=", 1) for pair in text.split())


@pytest.mark.parametrize(
    ("text", "variables", "shard", "local_rank", "source"),
    [
        (None, "RANK=1 WORLD_SIZE=2", None, None, "no --shard"),
        ("1/4", "RANK=0 WORLD_SIZE=2", (1, 4), None, "--shard 1/4"),
        ("auto", "", None, None, "no torchrun or SLURM"),
        ("auto", "RANK=1 WORLD_SIZE=2 LOCAL_RANK=1", (1, 2), 1, "torchrun: RANK=1"),
        ("auto", "RANK=0 WORLD_SIZE=1 LOCAL_RANK=0", None, 0, "one process"),
        # torchrun inside a SLURM job: torchrun's ranks are the ones that tell processes apart.
        (
            "auto",
            "RANK=3 WORLD_SIZE=8 SLURM_ARRAY_TASK_ID=0 SLURM_ARRAY_TASK_COUNT=2",
            (3, 8),
            None,
            "torchrun",
        ),
        ("auto", "SLURM_ARRAY_TASK_ID=3 SLURM_ARRAY_TASK_COUNT=4", (3, 4), None, "SLURM array"),
        (
            "auto",
            "SLURM_ARRAY_TASK_ID=5 SLURM_ARRAY_TASK_COUNT=4 SLURM_ARRAY_TASK_MIN=2",
            (3, 4),
            None,
            "array",
        ),
        (
            "auto",
            "SLURM_ARRAY_TASK_ID=4 SLURM_ARRAY_TASK_COUNT=4 "
            "SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_STEP=2",
            (2, 4),
            None,
            "array",
        ),
        (
            "auto",
            "SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_COUNT=2 SLURM_PROCID=0 SLURM_NTASKS=1",
            (1, 2),
            None,
            "array",
        ),
        ("auto", "SLURM_PROCID=2 SLURM_NTASKS=3", (2, 3), None, "SLURM_PROCID=2"),
        ("auto", "SLURM_PROCID=0 SLURM_NTASKS=1", None, None, "whole dataset"),
    ],
)
def test_shard_is_read_from_the_launcher_environment(text, variables, shard, local_rank, source):
    assignment = resolve_shard(text, environ(variables))
    assert assignment.shard == shard
    assert assignment.local_rank == local_rank
    assert source in assignment.source


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ("RANK=1", "RANK=1 is set but WORLD_SIZE is not"),
        ("WORLD_SIZE=2", "WORLD_SIZE=2 is set but RANK is not"),
        ("RANK=2 WORLD_SIZE=2", "RANK=2 WORLD_SIZE=2 is not a shard"),
        ("RANK=0 WORLD_SIZE=0", "is not a shard"),
        ("RANK=one WORLD_SIZE=2", "RANK='one' is not an integer"),
        ("RANK=0 WORLD_SIZE=2 LOCAL_RANK=", "LOCAL_RANK='' is not an integer"),
        ("SLURM_ARRAY_TASK_ID=1", "SLURM_ARRAY_TASK_COUNT is not"),
        ("SLURM_ARRAY_TASK_ID=4 SLURM_ARRAY_TASK_COUNT=4", "--array=0-3"),
        ("SLURM_ARRAY_TASK_ID=3 SLURM_ARRAY_TASK_COUNT=4 SLURM_ARRAY_TASK_STEP=2", "--array=0-3"),
        ("SLURM_NTASKS=4", "SLURM_NTASKS=4 is set but SLURM_PROCID is not"),
        ("SLURM_PROCID=4 SLURM_NTASKS=4", "is not a shard"),
    ],
)
def test_inconsistent_environment_is_one_clear_error(variables, message):
    with pytest.raises(ToolkitError) as caught:
        resolve_shard("auto", environ(variables))
    assert str(caught.value).startswith("shard='auto': ")
    assert message in str(caught.value)
    assert caught.value.argument == "shard"


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2", "Auto"])
def test_bad_shard_is_refused(text):
    with pytest.raises(ToolkitError, match="expected i/n"):
        parse_shard(text)


@pytest.mark.parametrize(
    ("device", "local_rank", "n_gpus", "expected"),
    [
        ("cuda", 3, 8, "cuda:3"),
        ("auto", 3, 8, "cuda:3"),
        ("auto", 1, 0, "auto"),  # no GPU here: auto stays auto (the CPU)
        ("cuda", 1, 0, "cuda:1"),  # and --device cuda fails later, saying CUDA is not here
        ("cuda", None, 8, "cuda"),
        ("cuda:0", 3, 8, "cuda:0"),  # a device the user pinned is kept
        ("cpu", 3, 8, "cpu"),
    ],
)
def test_torchrun_workers_take_the_gpu_of_their_local_rank(device, local_rank, n_gpus, expected):
    assert shard_device(device, local_rank, n_gpus) == expected


def test_more_torchrun_workers_than_gpus_is_one_clear_error():
    with pytest.raises(ToolkitError, match=r"^device='cuda': LOCAL_RANK=2 but this node has 2 GPU"):
        shard_device("cuda", 2, 2)


def assert_same_store(joined: Path, single: Path) -> None:
    """Every group, dataset (values, dtype, shape, chunking) and attribute equal, timestamps
    aside: the join wrote what one process writes."""

    def contents(path: Path) -> dict:
        found = {}
        with h5py.File(path, "r") as handle:
            found["/"] = {k: v for k, v in handle.attrs.items() if k not in TIMESTAMPS}

            def visit(name, item):
                if isinstance(item, h5py.Dataset):
                    found[name] = (item.dtype, item.shape, item.chunks, item[()])
                else:
                    found[name] = dict(item.attrs)

            handle.visititems(visit)
        return found

    a, b = contents(joined), contents(single)
    assert list(a) == list(b)
    for name, value in b.items():
        if isinstance(value, tuple):
            assert a[name][:3] == value[:3], name
            np.testing.assert_array_equal(a[name][3], value[3], err_msg=name)
        else:
            assert a[name] == value, name


def run_shards(dataset, root: Path, count: int, options: dict) -> list:
    return [
        extract_dataset(
            dataset,
            [tiny_vit_spec()],
            cache_root=root,
            options=ExtractionOptions(shard=(i, count), **options),
        )
        for i in range(count)
    ]


def single_run(dataset, root: Path, options: dict) -> Path:
    (path,) = extract_dataset(
        dataset, [tiny_vit_spec()], cache_root=root, options=ExtractionOptions(**options)
    ).written
    return path


def corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


@pytest.mark.parametrize(
    ("count", "chunk_rows", "limit", "tokens"),
    [(3, 5, None, None), (2, 4, 9, None), (5, 4096, None, None), (3, 5, None, 2)],
    ids=["3-shards-chunks-of-5", "limit-9-of-12", "5-shards-one-chunk", "3-shards-tokens"],
)
def test_streamed_join_writes_what_one_process_writes(
    folder_dataset, tmp_path, tiny_vit_weights, monkeypatch, count, chunk_rows, limit, tokens
):
    corrupt(folder_dataset / "benign" / "001.png")  # skipped, and recorded, in every case
    monkeypatch.setattr(shards, "JOIN_CHUNK_ROWS", chunk_rows)
    dataset = build_dataset("folder", folder_dataset)
    options = dict(weights=tiny_vit_weights, on_error="skip", limit=limit, tokens=tokens, **FAST)
    root = tmp_path / "sharded"
    reports = run_shards(dataset, root, count, options)
    assert [len(r.joined) for r in reports] == [0] * (count - 1) + [1], "the last shard joins"
    assert [e.model for e in list_stores(root)] == ["tiny-vit"], "shards are gone once joined"
    assert not any((root / "shards").rglob("*.h5")), "shard stores are removed after the join"
    single = single_run(dataset, tmp_path / "single", options)
    joined = reports[-1].joined[0]
    assert joined.name == single.name
    assert_same_store(joined, single)
    store = open_store(joined)
    assert [i for i, _ in store.skipped()] == ["benign/001.png"]
    n_rows = len(dataset.rows) if limit is None else limit
    assert sum(len(store.ids(s)) for s in store.splits) == n_rows - 1


def test_join_reads_the_shards_a_chunk_at_a_time(
    folder_dataset, tmp_path, tiny_vit_weights, monkeypatch
):
    monkeypatch.setattr(shards, "JOIN_CHUNK_ROWS", 4)
    dataset = build_dataset("folder", folder_dataset)
    options = ExtractionOptions(weights=tiny_vit_weights, shard=(0, 2), **FAST)
    extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path, options=options)
    windows = []
    read = Store.embeddings

    def spy(self, split, pooling, dtype=np.float32, rows=None):
        windows.append(rows)
        return read(self, split, pooling, dtype, rows)

    monkeypatch.setattr(Store, "embeddings", spy)  # only the join reads stores
    last = extract_dataset(
        dataset, [tiny_vit_spec()], cache_root=tmp_path, options=replace(options, shard=(1, 2))
    )
    assert len(last.joined) == 1
    assert windows, "the join reads through Store.embeddings"
    assert all(w is not None and w.stop - w.start <= 4 for w in windows), windows


def test_interrupted_shard_resumes_from_its_journal(
    folder_dataset, tmp_path, tiny_vit_weights, monkeypatch
):
    dataset = build_dataset("folder", folder_dataset)
    options = dict(weights=tiny_vit_weights, num_workers=0, progress=False, batch_size=2)
    shard_options = dict(options, flush_rows=2)
    first = ExtractionOptions(shard=(0, 2), **shard_options)
    extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path, options=first)
    read_image = type(dataset).read_image
    decoded = []

    def counted(self, row, **kwargs):
        decoded.append(row)
        if len(decoded) == 5 and preempt:  # the first image of shard 1's third batch
            raise KeyboardInterrupt
        return read_image(self, row, **kwargs)

    monkeypatch.setattr(type(dataset), "read_image", counted)
    second = replace(first, shard=(1, 2))
    preempt = True
    with pytest.raises((KeyboardInterrupt, Interrupted)):
        extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path, options=second)
    (partial,) = [e for e in list_stores(tmp_path / "shards") if not e.complete]
    assert 0 < partial.rows_done < 6
    decoded.clear()
    preempt = False
    resumed = extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path, options=second)
    assert len(decoded) == 6 - partial.rows_done, "journaled rows are not decoded again"
    monkeypatch.undo()
    assert_same_store(resumed.joined[0], single_run(dataset, tmp_path / "single", options))


def test_a_join_held_by_another_process_is_left_to_it(folder_dataset, tmp_path, tiny_vit_weights):
    dataset = build_dataset("folder", folder_dataset)
    options = ExtractionOptions(weights=tiny_vit_weights, **FAST)
    spec = plan_store(
        dataset,
        dataset.rows,
        tiny_vit_spec(),
        options,
        sources=dataset.sources_fingerprint(range(len(dataset.rows))),
    )
    target = store_path(tmp_path, spec)
    extract_dataset(
        dataset, [tiny_vit_spec()], cache_root=tmp_path, options=replace(options, shard=(0, 2))
    )
    last = replace(options, shard=(1, 2))
    with StoreLock(lock_path(target)):  # the other shard's process, joining right now
        report = extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path, options=last)
    assert report.joined == [] and not target.exists()
    assert len(list_stores(tmp_path / "shards")) == 2, "shard stores stay for that join"
    # Had that process died mid-join, rerunning any shard's command joins.
    rerun = extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path, options=last)
    assert rerun.joined == [target]
    # The other process, done with its shard a moment later, finds the store joined.
    assert shards.join_shards(spec, dataset.rows, 2, tmp_path, {}) is None


@pytest.mark.slow
def test_torchrun_with_two_processes_writes_the_single_run_store(tmp_path, test_vit_weights):
    images = write_folder_dataset(tmp_path / "images", n_per_class=3)
    corrupt(images / "malignant" / "001.png")
    cache = tmp_path / "cache"
    extract = Path(sys.executable).parent / "extract"
    assert extract.is_file(), f"the console script {extract} is installed with the toolkit"
    run_args = ["--model", TEST_VIT, "--weights", str(test_vit_weights), "--dataset", "folder"]
    run_args += ["--data-dir", str(images), "--workers", "0", "--on-error", "skip"]
    # `python -m torch.distributed.run` is what the `torchrun` script runs.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "--no-python", str(extract), "run", *run_args]
    command += ["--cache-dir", str(cache), "--shard", "auto"]
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=dict(os.environ)
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    for rank in (0, 1):
        assert f"torchrun: RANK={rank} WORLD_SIZE=2 -> shard {rank}/2" in finished.stdout
    assert finished.stdout.count("joined all shards into") == 1
    (joined,) = [e.path for e in list_stores(cache)]
    dataset = build_dataset("folder", images)
    options = ExtractionOptions(weights=test_vit_weights, on_error="skip", **FAST)
    (single,) = extract_dataset(
        dataset, [resolve_model(TEST_VIT)], cache_root=tmp_path / "single", options=options
    ).written
    assert_matches_single_run(joined, single)
