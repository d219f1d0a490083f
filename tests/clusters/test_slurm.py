"""`extract submit` and `--shard auto` on a real SLURM (slurmctld and slurmd on this machine):
job arrays, a cancelled array task, a rerun that submits only what is missing, `srun`, and
Ctrl-C while waiting."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medprobe.cache.inventory.catalog import list_stores
from medprobe.extract.datasets import build_dataset
from medprobe.extract.models import resolve_model
from medprobe.extract.pipeline import ExtractionOptions, extract_dataset
from medprobe.extract.scaleout.submit import SlurmResources, plan_request, submit
from tests.clusters.stores import assert_same_store
from tests.extract.conftest import TEST_VIT, write_folder_dataset

pytestmark = pytest.mark.cluster

EXTRACT = str(Path(sys.executable).parent / "extract")
DEADLINE_S = 240  # jobs start in seconds; this is for a machine loaded by other work


def extract_args(images: Path, cache: Path, weights: Path, *extra: str) -> list[str]:
    return [
        *("--model", TEST_VIT, "--weights", str(weights), "--dataset", "folder"),
        *("--data-dir", str(images), "--cache-dir", str(cache), "--workers", "0"),
        *("--batch-size", "2", *extra),
    ]


def single_run(images: Path, weights: Path, cache: Path) -> Path:
    """The store one `extract run` process writes."""
    options = ExtractionOptions(weights=weights, num_workers=0, batch_size=2, progress=False)
    dataset = build_dataset("folder", images)
    (path,) = extract_dataset(
        dataset, [resolve_model(TEST_VIT)], cache_root=cache, options=options
    ).written
    return path


def run_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [EXTRACT, *args], capture_output=True, text=True, timeout=DEADLINE_S, env=env
    )


def test_submit_runs_one_job_array_whose_joined_store_is_the_single_run_store(
    slurm_env, tmp_path, test_vit_weights
):
    images = write_folder_dataset(tmp_path / "images", n_per_class=4)
    cache = tmp_path / "cache"
    args = ["submit", *extract_args(images, cache, test_vit_weights)]
    args += ["--executor", "slurm", "--shards", "3", "--wait", "--partition", slurm_env.partition]
    done = run_cli(args)
    assert done.returncode == 0, done.stdout + done.stderr
    ids = re.findall(r"shard (\d) job (\d+)_(\d)", done.stdout)
    assert [(int(s), int(t)) for s, _, t in ids] == [(0, 0), (1, 1), (2, 2)]
    assert len({array for _, array, _ in ids}) == 1, "one job array, three tasks"
    array = ids[0][1]
    # slurmctld's own record of the array (accounting is off, so scontrol rather than sacct)
    record = slurm_env.slurm("scontrol", "show", "job", array)
    assert record.count(f"ArrayJobId={array} ") == 3 and record.count("JobState=COMPLETED") == 3
    assert "shards done 3/3, images 8/8" in done.stdout
    (joined,) = [e.path for e in list_stores(cache)]
    assert f"store {joined}" in done.stdout
    assert_same_store(joined, single_run(images, test_vit_weights, tmp_path / "single"))

    again = run_cli(args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "every store is already complete; nothing submitted" in again.stdout
    assert f"store {joined}" in again.stdout


def wait_until(condition, what: str, timeout: float = DEADLINE_S, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(every)
    return value


def job_state(clusters, job_id: str) -> str:
    line = clusters.slurm("squeue", "-h", "-j", job_id, "-o", "%T").strip()
    return line or "ENDED"


def test_a_cancelled_array_task_is_the_only_shard_a_rerun_submits(
    slurm_env, tmp_path, test_vit_weights
):
    images = write_folder_dataset(tmp_path / "images", n_per_class=4)
    cache = tmp_path / "cache"
    request = plan_request(
        "folder",
        TEST_VIT,
        shards=3,
        data_dir=images,
        cache_dir=cache,
        weights=test_vit_weights,
        num_workers=0,
        batch_size=2,
    )
    resources = SlurmResources(partition=slurm_env.partition)
    first = submit(
        request, executor="slurm", shards=3, log_folder=tmp_path / "logs1", resources=resources
    )
    cancelled = first.shards[1].job_id
    wait_until(lambda: job_state(slurm_env, cancelled) == "RUNNING", f"{cancelled} running")
    slurm_env.slurm("scancel", cancelled)
    outcome = first.wait()
    assert [s.index for s in outcome.failed] == [1], "shard 1 was cancelled, 0 and 2 ran"
    assert outcome.stores == [], "no join while shard 1 is missing"
    shard_stores = [e for e in list_stores(cache / "shards") if e.complete]
    assert len(shard_stores) == 2

    second = submit(
        request, executor="slurm", shards=3, log_folder=tmp_path / "logs2", resources=resources
    )
    # How we know only shard 1 reruns: the second submission is one job, for shard 1 (one
    # record in slurmctld, one pickled job in its log folder), and the complete shard stores
    # are untouched until that job joins them.
    assert [s.index for s in second.shards] == [1] and len(second.jobs) == 1
    array = second.shards[0].job_id.split("_")[0]
    record = slurm_env.slurm("scontrol", "show", "job", array)
    assert len(re.findall(r"^JobId=", record, re.MULTILINE)) == 1, record
    mtimes = {e.path: e.path.stat().st_mtime_ns for e in shard_stores}
    assert len(list((tmp_path / "logs2").glob("*_submitted.pkl"))) == 1
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    result = second.wait()
    assert result.failed == [] and len(result.stores) == 1
    assert "shard 1/3" in second.shards[0].stderr.read_text()
    assert_same_store(result.stores[0], single_run(images, test_vit_weights, tmp_path / "one"))


def test_shard_auto_inside_srun_splits_by_task_and_joins(slurm_env, tmp_path, test_vit_weights):
    images = write_folder_dataset(tmp_path / "images", n_per_class=4)
    cache = tmp_path / "cache"
    command = ["srun", "--ntasks", "2", "--partition", slurm_env.partition, EXTRACT, "run"]
    command += [*extract_args(images, cache, test_vit_weights), "--shard", "auto"]
    env = {**os.environ, "SLURM_CONF": str(slurm_env.slurm_conf)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE_S, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    for index in (0, 1):
        assert f"SLURM_PROCID={index} SLURM_NTASKS=2 -> shard {index}/2" in done.stdout
    assert done.stdout.count("joined all shards into") == 1, "the last task to finish joins"
    (joined,) = [e.path for e in list_stores(cache)]
    assert_same_store(joined, single_run(images, test_vit_weights, tmp_path / "one"))


def test_ctrl_c_while_waiting_cancels_the_submitted_jobs_and_says_how_to_resume(
    slurm_env, tmp_path, test_vit_weights
):
    images = write_folder_dataset(tmp_path / "images", n_per_class=4)
    args = ["submit", *extract_args(images, tmp_path / "cache", test_vit_weights)]
    args += ["--executor", "slurm", "--shards", "2", "--wait", "--partition", slurm_env.partition]
    process = subprocess.Popen(
        [EXTRACT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines = []
    while "waiting for every shard" not in "".join(lines):
        line = process.stdout.readline()
        assert line, f"ended before waiting: {''.join(lines)}{process.stderr.read()}"
        lines.append(line)
    jobs = re.findall(r"job (\d+_\d)", "".join(lines))
    assert len(jobs) == 2
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "cancelled (scancel) the 2 unfinished slurm shard job(s)" in err
    assert "Rerun the same command to resume" in err
    for job in jobs:
        wait_until(lambda job=job: job_state(slurm_env, job) == "ENDED", f"{job} cancelled", 60)
    # A task cancelled while pending has no record of its own: the array's record holds it.
    record = slurm_env.slurm("scontrol", "show", "job", jobs[0].split("_")[0])
    states = set(re.findall(r"JobState=(\w+)", record))
    assert states == {"CANCELLED"}, record
