"""`probe run`, `probe report` and `probe similarity` against a careless or hostile user: every
case ends with the right result or one line (exit 2 for a mistake, 1 for a failure); nothing the
user had is lost, nothing half-written is published, nothing fails silently."""

import json
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from medprobe.cache import ToolkitError
from medprobe.cache.files import atomic
from medprobe.cache.files.atomic import PublishConflict, publish_folder
from medprobe.probe import guards
from medprobe.probe.run.runner import probe as mp_probe
from medprobe.probe.similarity.compare import similarity
from medprobe.probe.stats.bootstrap import CHUNK_ELEMENTS
from tests.probe.conftest import write_blob_store
from tests.probe.run.conftest import QUICK, files_under, one_line

# --- 1. an output folder never is, nor holds, what the run reads -----------------------------


@pytest.mark.parametrize("overwrite", [True, False])
def test_run_refuses_to_publish_onto_the_cache_root_or_a_folder_holding_it(
    cli, blob_root, overwrite
):
    before = files_under(blob_root)
    for out in (blob_root, blob_root.parent):
        flags = ["--overwrite"] if overwrite else []
        result = cli("run", *QUICK, "--cache-dir", blob_root, "--out", out, *flags)
        assert result.exit_code == 2
        assert "which this run reads" in one_line(result), result.output
    assert files_under(blob_root) == before


def test_similarity_refuses_an_out_that_holds_the_cache_root_and_the_users_files(cli, tmp_path):
    project = tmp_path / "proj"
    root = project / "embeddings"
    write_blob_store(root, model="a", separation=1.0, n_train=40, n_test=20)
    write_blob_store(root, model="b", separation=1.0, n_train=40, n_test=20)
    (project / "notes.txt").write_text("mine")
    before = files_under(project)
    result = cli("similarity", "--cache-dir", root, "--out", project, "--overwrite")
    assert result.exit_code == 2 and "which this run reads" in one_line(result)
    assert files_under(project) == before


def test_overwrite_replaces_neither_a_users_folder_nor_one_holding_a_store(
    cli, blob_root, tmp_path
):
    store = next(blob_root.rglob("*.h5"))
    results_like = tmp_path / "old"
    results_like.mkdir()
    (results_like / "run.json").write_text("{}")
    (results_like / store.name).write_bytes(store.read_bytes())
    result = cli("run", *QUICK, "--cache-dir", blob_root, "--out", results_like, "--overwrite")
    assert result.exit_code == 2 and "holds a store" in one_line(result)
    assert (results_like / store.name).is_file()


def test_out_dot_is_refused_in_one_line_where_it_holds_the_default_cache(
    cli, tmp_path, monkeypatch, isolated_cache_root
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEDPROBE_CACHE_DIR")
    write_blob_store(tmp_path / "embeddings", model="a", separation=1.0, n_train=40, n_test=20)
    result = cli("run", *QUICK, "--out", ".", "--overwrite")
    assert result.exit_code == 2 and "which this run reads" in one_line(result)


def test_out_dot_publishes_into_an_empty_working_folder(cli, blob_root, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = cli("run", *QUICK, "--cache-dir", blob_root, "--out", ".", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (work / "results.csv").is_file() and (work / "report.md").is_file()


# --- 2. two runs, one folder: the first one's results are never lost -------------------------


def _publish_after_both_checked(target: str, barrier, tag: str, outcomes) -> None:
    """A run that passed the 'does it exist' check, waits until its rival has too, publishes."""

    def write_into(folder: Path) -> None:
        (folder / "run.json").write_text(tag)
        barrier.wait(timeout=30)

    try:
        publish_folder(Path(target), write_into, marker="run.json")
        outcomes.put((tag, "published", ""))
    except PublishConflict as error:
        outcomes.put((tag, "conflict", str(error)))


@pytest.mark.parametrize("no_replace_call", [True, False], ids=["renameat2", "rename"])
def test_of_two_concurrent_publishes_to_one_folder_the_second_keeps_its_files_aside(
    tmp_path, monkeypatch, no_replace_call
):
    if not no_replace_call:  # where the C library has no renameat2: a plain rename
        monkeypatch.setattr(atomic, "_renameat2", lambda: None)
    target = tmp_path / "out"
    context = multiprocessing.get_context("fork")
    barrier, outcomes = context.Barrier(2), context.Queue()
    workers = [
        context.Process(
            target=_publish_after_both_checked, args=(str(target), barrier, t, outcomes)
        )
        for t in ("first", "second")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    results = sorted(outcomes.get(timeout=5) for _ in workers)
    kinds = sorted(kind for _, kind, _ in results)
    assert kinds == ["conflict", "published"], results
    winner = next(tag for tag, kind, _ in results if kind == "published")
    loser, _, message = next(r for r in results if r[1] == "conflict")
    assert (target / "run.json").read_text() == winner
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out-unpublished-")]
    assert len(kept) == 1 and (kept[0] / "run.json").read_text() == loser
    assert str(kept[0]) in message and "published by another run" in message
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_a_second_run_to_an_existing_out_is_refused_and_the_first_kept(cli, blob_root, tmp_path):
    out = tmp_path / "out"
    assert cli("run", *QUICK, "--cache-dir", blob_root, "--out", out).exit_code == 0
    first = files_under(out)
    result = cli("run", *QUICK, "--cache-dir", blob_root, "--out", out)
    assert result.exit_code == 2 and "already exists" in one_line(result)
    assert files_under(out) == first


# --- 3. temporaries of killed runs are removed by the next run, a live run's never ------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_next_publish_removes_a_killed_runs_temporary_and_keeps_live_and_foreign_ones(
    tmp_path,
):
    dead, live = _dead_pid(), os.getppid()
    host = socket.gethostname()
    folders = {
        "killed": (f".a.tmp-{dead}", f"{host} {dead}"),
        "live": (f".b.tmp-{live}", f"{host} {live}"),
        "other host": (f".c.tmp-{dead}", f"another-host {dead}"),
        "just made, no marker yet": (f".d.tmp-{dead}", None),
    }
    for name, marker in folders.values():
        (tmp_path / name).mkdir()
        if marker is not None:
            (tmp_path / name / atomic.WRITER_MARKER).write_text(marker)
    publish_folder(tmp_path / "out", lambda folder: (folder / "run.json").write_text("{}"))
    left = {p.name for p in tmp_path.iterdir()}
    assert folders["killed"][0] not in left
    assert {folders[k][0] for k in ("live", "other host", "just made, no marker yet")} <= left
    assert (tmp_path / "out" / "run.json").is_file()
    assert not (tmp_path / "out" / atomic.WRITER_MARKER).exists()


# --- 4. the multi-label headline names the labels it leaves out ------------------------------


def _no_positive_finding1_in_train(labels, splits):
    labels[splits == "train", 1] = 0


def test_mean_auroc_names_the_labels_it_leaves_out_in_run_json_and_on_the_console(cli, tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(
        root,
        model="m",
        separation=2.0,
        n_labels=3,
        dataset="chest",
        edit_labels=_no_positive_finding1_in_train,
    )
    out = tmp_path / "out"
    result = cli("run", *QUICK, "--cache-dir", root, "--out", out)
    assert result.exit_code == 0, result.output
    left_out = json.loads((out / "run.json").read_text())["datasets"]["chest"]
    assert left_out["headline_leaves_out"] == {"finding1": "no known positive training image"}
    assert "chest: mean_auroc does not cover 1 labels: finding1 (no known positive training" in (
        result.output.replace("\n", " ")
    )
    frame = pd.read_csv(out / "results.csv")
    assert "auroc[finding1]" not in set(frame["metric"])


def _no_class2_in_test(labels, splits):
    labels[(splits == "test") & (labels == 2)] = 0


def test_a_class_without_test_images_is_named_as_left_out_of_macro_auroc(cli, tmp_path):
    """Macro AUROC averages over the classes present (scikit-learn refuses instead) and macro F1
    counts the absent class as 0: both are said, by class name, in run.json and on the console."""
    root = tmp_path / "embeddings"
    write_blob_store(root, model="m", separation=2.0, edit_labels=_no_class2_in_test)
    out = tmp_path / "out"
    result = cli("run", *QUICK, "--cache-dir", root, "--out", out)
    assert result.exit_code == 0, result.output
    task = json.loads((out / "run.json").read_text())["datasets"]["blobs"]
    assert list(task["headline_leaves_out"]) == ["class2"]
    assert "does not cover 1 classes: class2 (no test image" in result.output.replace("\n", " ")


# --- 5. sizes are checked against the machine before any work --------------------------------


def test_a_bootstrap_past_the_memory_is_refused_before_any_probe_naming_both_sizes(
    blob_root, monkeypatch
):
    monkeypatch.setattr(guards, "available_memory", lambda: 50 * 2**20)
    monkeypatch.setattr(
        "medprobe.probe.run.runner.draw_supports",
        lambda *a: pytest.fail("supports drawn before the memory check"),
    )
    with pytest.raises(ToolkitError) as refused:
        mp_probe(blob_root, shots=2, seeds=2, bootstrap=100_000)
    message = str(refused.value)
    assert message.startswith(
        "bootstrap=100000: the bootstrap (100,000 resamples of up to 100 test images, for 2 "
        "stores x poolings) would take about "
    )
    assert "MiB; this machine has 50.0 MiB of memory available; lower bootstrap to" in message
    assert message.endswith("or fewer, probe fewer stores at once, or pass bootstrap=0")


def test_a_similarity_bootstrap_past_the_memory_is_refused_before_embeddings_are_read(
    blob_root, monkeypatch
):
    monkeypatch.setattr(guards, "available_memory", lambda: 2**20)
    with pytest.raises(ToolkitError, match=r"bootstrap=5000: the bootstrap \(5,000 replicates of"):
        similarity(blob_root, bootstrap=5000, metrics="cka")


def test_seeds_past_the_memory_are_refused_before_any_support_is_drawn(blob_root, monkeypatch):
    monkeypatch.setattr(guards, "available_memory", lambda: 2**20)
    monkeypatch.setattr(
        "medprobe.probe.run.runner.draw_supports",
        lambda *a: pytest.fail("supports drawn before the memory check"),
    )
    with pytest.raises(ToolkitError) as refused:
        mp_probe(blob_root, shots=[1, 5], seeds=10_000, bootstrap=0)
    message = str(refused.value)
    assert message.startswith(
        "seeds=10000: the support sets and result rows (10,000 seeds per budget, up to 15 "
        "labelled images each, for 2 stores x poolings) would take about "
    )
    assert "1.0 MiB of memory available; lower seeds to about " in message


def test_the_memory_estimate_grows_with_the_largest_test_split_and_the_resamples(blob_root):
    from medprobe.probe.targets import select_targets

    targets = select_targets(blob_root)
    sizes = dict(n_cells_per_target=4, workers=1, scoring_threads=2)
    small, largest = guards.bootstrap_bytes(targets, 1000, **sizes)
    large, _ = guards.bootstrap_bytes(targets, 2000, **sizes)
    assert largest == 100 and large == 2 * small
    # counts of the largest split per worker, a (slots x resamples) table and the resamples'
    # float64 weights per cell scored at once (a split this small fits in one chunk), plus
    # every kept metric per resample
    counts, tables = 12 * 1000 * 100, 2 * (8 * 1000 * 100 + 8 * 100 * 1000)
    assert small == counts + tables + 2 * 8 * 1000 * 4 * guards.SINGLE_LABEL_METRICS
    # a large split's tables are bounded by the chunk of resamples scored at a time
    many = 10**6
    chunked, _ = guards.bootstrap_bytes(targets, many, **sizes)
    kept = 2 * 8 * many * 4 * guards.SINGLE_LABEL_METRICS
    assert chunked == 12 * many * 100 + 2 * 16 * CHUNK_ELEMENTS + kept


def test_the_cells_scored_at_once_are_what_each_worker_scores():
    """The memory estimate counts scoring_threads(workers) per worker: loky gives each of n
    workers cpu_count // n torch threads (joblib's inner thread limit), checked in real ones."""
    import torch
    from joblib import Parallel, delayed

    from medprobe.probe.run.sweep import SCORING_THREADS, scoring_threads

    assert scoring_threads() == min(SCORING_THREADS, torch.get_num_threads())
    in_workers = Parallel(n_jobs=2, backend="loky")(delayed(scoring_threads)() for _ in range(2))
    assert in_workers == [scoring_threads(2)] * 2


# --- 7. what a budget gave, and progress with -v ----------------------------------------------


def test_a_fraction_that_rounds_to_no_image_warns_and_records_what_was_drawn(blob_root, caplog):
    with caplog.at_level(logging.INFO, logger="medprobe.probe.run.runner"):
        results = mp_probe(
            blob_root, fractions=0.0001, seeds=2, bootstrap=0, methods="prototype", progress=False
        )
    sizes = results.run["support_sizes"]["blobs|0.0001 of train"]
    assert sizes == {"images": 3.0, "fraction_of_train": 3 / 200}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "fractions=0.0001 of blobs's 200 training images rounds to no image of some class" in w
        and "3 images, 0.015 of train" in w
        for w in warned
    ), warned
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(m.startswith("probing 2 stores x poolings: blobs/strong:cls") for m in logged)
    assert any(m.startswith("drew 2 support sets") for m in logged)
    assert any(m.startswith("probed blobs/weak:cls (2 of 2) at ") for m in logged), logged
