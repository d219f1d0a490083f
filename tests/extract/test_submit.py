"""`extract submit`: shard jobs through submitit, run for real by its local executor, and the
SLURM job array it would hand to sbatch."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medprobe.cache import ToolkitError
from medprobe.cache.console import cli_message
from medprobe.cache.inventory.catalog import list_stores
from medprobe.extract.cli import app
from medprobe.extract.config import ConfiguredDataset
from medprobe.extract.datasets import build_dataset
from medprobe.extract.models import resolve_model
from medprobe.extract.pipeline import ExtractionOptions, extract_dataset
from medprobe.extract.scaleout.submit import (
    ShardJob,
    ShardRequest,
    SlurmResources,
    parse_time,
    submit,
)
from tests.extract.conftest import TEST_VIT, assert_matches_single_run, write_folder_dataset

runner = CliRunner()


def submit_args(images: Path, cache: Path, weights: Path, *extra: str) -> list[str]:
    return [
        "submit",
        "--model",
        TEST_VIT,
        "--weights",
        str(weights),
        "--dataset",
        "folder",
        "--data-dir",
        str(images),
        "--cache-dir",
        str(cache),
        "--workers",
        "0",
        "--batch-size",
        "4",
        *extra,
    ]


@pytest.mark.slow
def test_local_submit_reports_a_failed_shard_and_a_rerun_gives_the_single_run_store(
    tmp_path, test_vit_weights
):
    images = write_folder_dataset(tmp_path / "images", n_per_class=3)
    bad = images / "benign" / "001.png"  # row 1 of 6: shard 1 of 2
    sound = bad.read_bytes()
    bad.write_bytes(sound[:60])
    cache = tmp_path / "cache"
    args = submit_args(images, cache, test_vit_weights, "--executor", "local", "--shards", "2")

    failed = runner.invoke(app, args)
    assert failed.exit_code == 1, failed.output
    assert "shard 1/2" in failed.output and "benign/001.png" in failed.output
    stderr = Path(re.search(r"stderr: (\S+)", failed.output).group(1))
    assert "benign/001.png" in stderr.read_text(), "the log named is the failed job's"
    shard_stores = sorted(list_stores(cache / "shards"), key=lambda e: e.complete)
    assert [e.complete for e in shard_stores] == [False, True], "shard 0 kept, shard 1 journaled"

    bad.write_bytes(sound)
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0, rerun.output
    assert "shards done 2/2, images 6/6" in rerun.output
    (joined,) = [e.path for e in list_stores(cache)]
    assert f"store {joined}" in rerun.output.replace("\n", "")
    dataset = build_dataset("folder", images)
    options = ExtractionOptions(weights=test_vit_weights, num_workers=0, progress=False)
    (single,) = extract_dataset(
        dataset, [resolve_model(TEST_VIT)], cache_root=tmp_path / "single", options=options
    ).written
    assert_matches_single_run(joined, single)
    complete = runner.invoke(app, args)
    assert complete.exit_code == 0, complete.output
    assert "every store is already complete; nothing submitted" in complete.output


@pytest.mark.slow
def test_a_preempted_shard_job_is_requeued_and_resumes_from_its_journal(tmp_path, test_vit_weights):
    options = ExtractionOptions(
        device="cpu", weights=test_vit_weights, num_workers=0, batch_size=2, limit=48, flush_rows=2
    )
    request = ShardRequest(
        (TEST_VIT,), ConfiguredDataset("digits", tmp_path), tmp_path / "cache", options
    )
    submission = submit(request, executor="local", shards=1, log_folder=tmp_path / "logs")
    controller = submission.jobs[0]._process
    deadline = time.time() + 300
    while not (task := Path(f"/proc/{controller.pid}/task/{controller.pid}/children").read_text()):
        assert time.time() < deadline and controller.poll() is None, "the job never started"
        time.sleep(0.005)
    while not list((tmp_path / "cache").glob("digits/*.journal/part-*")):
        assert time.time() < deadline and controller.poll() is None, "no part was journaled"
        time.sleep(0.005)
    # Frozen between two batches, the job gets what SLURM sends before preempting it (and
    # submitit's local controller before its time limit); it handles it once it runs again.
    os.kill(int(task), signal.SIGSTOP)
    os.kill(int(task), signal.SIGUSR2)
    os.kill(int(task), signal.SIGCONT)
    result = submission.wait()
    assert result.failed == [] and len(result.stores) == 1
    log = submission.shards[0].stderr.read_text()
    assert "this job is preempted" in log and "Requeued job" in log
    resumed_at = int(re.search(r"resuming \S+ at row (\d+) of 48", log).group(1))
    assert 0 < resumed_at < 48
    (single,) = extract_dataset(
        build_dataset("digits", None),
        [resolve_model(TEST_VIT)],
        cache_root=tmp_path / "single",
        options=options,
    ).written
    assert_matches_single_run(result.stores[0], single)


def fake_slurm(bin_dir: Path) -> Path:
    """`srun` and `sbatch` stand-ins: sbatch records its arguments and answers as SLURM does."""
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\necho "$@" >> {bin_dir}/sbatch.calls\necho "Submitted batch job 4242"\n'
    )
    for script in ("srun", "sbatch"):
        (bin_dir / script).chmod(0o755)
    return bin_dir / "sbatch.calls"


def test_slurm_submit_is_one_job_array_with_the_resources_asked_for(tmp_path, monkeypatch):
    from submitit.core.utils import DelayedSubmission

    weights = tmp_path / "checkpoint.pth"  # only its path travels; no job runs here
    weights.touch()

    calls = fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    images = write_folder_dataset(tmp_path / "images", n_per_class=2)
    logs = tmp_path / "logs"
    slurm_flags = ["--executor", "slurm", "--shards", "3", "--partition", "gpu"]
    slurm_flags += ["--gpus-per-node", "1", "--cpus-per-task", "8", "--mem", "64G"]
    slurm_flags += ["--time", "1-02:00:00", "--account", "lab", "--qos", "high"]
    slurm_flags += ["--array-parallelism", "2", "--log-dir", str(logs)]
    result = runner.invoke(app, submit_args(images, tmp_path / "cache", weights, *slurm_flags))
    assert result.exit_code == 0, result.output
    assert "shard 0 job 4242_0, shard 1 job 4242_1, shard 2 job 4242_2" in result.output
    assert str(logs) in result.output
    assert "waiting" not in result.output, "SLURM submissions do not wait unless asked"
    assert len(calls.read_text().splitlines()) == 1, "one sbatch call: one array"
    script = (logs / "4242_submission.sh").read_text()
    for line in [
        "--array=0-2%2",
        "--partition=gpu",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--mem=64G",
        "--time=1560",
        "--account=lab",
        "--qos=high",
        "--job-name=medprobe-extract",
        "--signal=USR2@90",  # submitit's warning before the end: checkpoint and requeue
    ]:
        assert f"#SBATCH {line}\n" in script, line
    for index in range(3):
        delayed = DelayedSubmission.load(logs / f"4242_{index}_submitted.pkl")
        job = delayed.function
        assert isinstance(job, ShardJob) and (job.index, job.count) == (index, 3)
        assert job.request.dataset.path == images.absolute()
        # What submitit does on preemption or timeout: requeue what checkpoint() returns.
        requeued = delayed._checkpoint_function()
        assert requeued.function is job and requeued.args == () and requeued.kwargs == {}


def request_for(tmp_path: Path) -> ShardRequest:
    return ShardRequest(
        models=(TEST_VIT,),
        dataset=ConfiguredDataset("digits", tmp_path),
        cache_root=tmp_path,
        options=ExtractionOptions(),
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(executor="pbs"), "executor='pbs': choose one of ['slurm', 'local']"),
        (dict(shards=0), "shards=0: must be at least 1"),
        (dict(resources=SlurmResources(time="soon")), "time='soon': expected minutes"),
    ],
)
def test_bad_submission_is_one_clear_error(tmp_path, changes, message):
    arguments = {"executor": "local", "shards": 2, "log_folder": tmp_path / "logs", **changes}
    with pytest.raises(ToolkitError) as caught:
        submit(request_for(tmp_path), **arguments)
    assert str(caught.value).startswith(message)
    assert not (tmp_path / "logs").exists(), "nothing submitted"


def test_slurm_executor_away_from_slurm_says_where_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    with pytest.raises(ToolkitError, match="login node, or use --executor local"):
        submit(request_for(tmp_path), executor="slurm", shards=2, log_folder=tmp_path / "l")


def test_missing_submitit_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # what `import submitit` sees if absent
    with pytest.raises(ToolkitError, match=r"pip install 'medprobe\[cluster\]'"):
        submit(request_for(tmp_path), executor="local", shards=2)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("90", 90),
        ("90:30", 91),
        ("4:00:00", 240),
        ("0:00:01", 1),
        ("1-0", 1440),
        ("2-12", 3600),
        ("1-02:30", 1590),
        ("1-00:00:30", 1441),
    ],
)
def test_time_limits_are_read_as_sbatch_reads_them(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "soon", "1:2:3:4", "0", "0:00:00", "-5", "1-2:3:4:5", "1h"])
def test_unreadable_time_limit_is_refused(text):
    with pytest.raises(ToolkitError, match=rf"^time={re.escape(repr(text))}: "):
        parse_time(text)


def test_more_shards_than_images_is_refused_before_anything_is_submitted(tmp_path):
    images = write_folder_dataset(tmp_path / "images", n_per_class=2)
    (tmp_path / "unused.pth").write_bytes(b"never read: the shard count is refused first")
    args = submit_args(images, tmp_path / "cache", tmp_path / "unused.pth", "--shards", "5")
    result = runner.invoke(app, [*args, "--executor", "local"])
    message = cli_message(result.exception, app)
    assert "--shards 5: more shards than the 4 images to embed" in message
    assert not (tmp_path / "cache").exists()


def submit_processes(log_folder: Path) -> list[int]:
    """The local job processes of a submission (submitit's controllers and their tasks), found
    by the log folder on their command line."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and "submitit" in command and str(log_folder) in command:
            found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_ctrl_c_while_waiting_on_local_jobs_stops_them_with_one_message(tmp_path, test_vit_weights):
    images = write_folder_dataset(tmp_path / "images", n_per_class=3)
    logs = tmp_path / "logs"
    args = submit_args(images, tmp_path / "cache", test_vit_weights, "--executor", "local")
    extract = Path(sys.executable).parent / "extract"
    process = subprocess.Popen(
        [extract, *args, "--shards", "2", "--log-dir", str(logs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    lines = []
    while "waiting for every shard" not in "".join(lines):
        line = process.stdout.readline()
        assert line, f"ended before waiting: {''.join(lines)}{process.stderr.read()}"
        lines.append(line)
    assert submit_processes(logs), "the local jobs run"
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group gets SIGINT
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "stopped the 2 unfinished local shard job(s)" in err
    assert "Rerun the same command to resume" in err
    deadline = time.time() + 30
    while submit_processes(logs):
        assert time.time() < deadline, "the local jobs kept running"
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("flag", "value", "least"),
    [("--gpus-per-node", "-1", 0), ("--cpus-per-task", "0", 1), ("--array-parallelism", "0", 1)],
)
def test_negative_slurm_resources_are_refused_before_anything_is_submitted(
    tmp_path, flag, value, least
):
    images = write_folder_dataset(tmp_path / "images", n_per_class=2)
    args = submit_args(images, tmp_path / "cache", tmp_path / "unused.pth", flag, value)
    result = runner.invoke(app, [*args, "--shards", "2"])
    message = cli_message(result.exception, app)
    assert message.startswith(f"{flag} {value}: must be a whole number of at least {least}")
    assert not (tmp_path / "cache").exists()


def test_submit_help_shows_time_formats_as_written():
    result = runner.invoke(app, ["submit", "--help"], env={"COLUMNS": "200"})
    assert "minutes, HH:MM:SS or D-HH:MM:SS" in result.output and "\u24c2" not in result.output
