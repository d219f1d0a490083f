"""`probe run --cluster tcp://…` on a real Dask scheduler with two workers (each under a nanny,
as `dask worker` starts them): the same results.csv as a local run, also when a worker is killed
mid-sweep; and one clear line, exit 1 and nothing published when the scheduler goes away."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medprobe.probe.run.runner import probe
from tests.probe.conftest import write_blob_store

pytestmark = pytest.mark.cluster

PROBE = str(Path(sys.executable).parent / "probe")
SWEEP = ["--shots", "1,5", "--seeds", "2", "--bootstrap", "0", "--methods", "logreg,knn"]
DEADLINE_S = 300


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, bytes]:
    """Four stores, and the results.csv a local (no cluster) run writes for them."""
    root = tmp_path_factory.mktemp("dask")
    cache = root / "cache"
    for index, model in enumerate(("m0", "m1", "m2", "m3")):
        write_blob_store(
            cache,
            model=model,
            separation=1.5 + 0.3 * index,
            n_train=160,
            n_test=80,
            dim=32,
            noise_seed=index,
        )
    probe(
        cache,
        shots=[1, 5],
        seeds=2,
        bootstrap=0,
        methods=["logreg", "knn"],
        out=root / "local",
        progress=False,
    )
    return cache, (root / "local" / "results.csv").read_bytes()


def start_probe(cache: Path, out: Path, scheduler: str, *extra: str) -> subprocess.Popen:
    command = [PROBE, "run", "--cache-dir", str(cache), *SWEEP, *extra, "--out", str(out)]
    return subprocess.Popen(
        [*command, "--cluster", scheduler],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def busy_worker(client, process: subprocess.Popen) -> str:
    """The address of a worker running a sweep task, as soon as one does."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "the sweep ended before any task was seen running"
        busy = [worker for worker, keys in client.processing().items() if keys]
        if busy:
            return busy[0]
        time.sleep(0.02)
    raise AssertionError("no sweep task started")


def test_a_sweep_on_the_dask_cluster_writes_the_local_results(clusters, sweep, tmp_path):
    cache, local = sweep
    process = start_probe(cache, tmp_path / "out", clusters.dask_scheduler)
    out, err = process.communicate(timeout=DEADLINE_S)
    assert process.returncode == 0, out + err
    assert (tmp_path / "out" / "results.csv").read_bytes() == local
    assert "distributed." not in err, "distributed's INFO logs stay quiet without -v"


def test_a_worker_killed_mid_sweep_changes_nothing(clusters, sweep, tmp_path):
    import distributed

    cache, local = sweep
    with distributed.Client(clusters.dask_scheduler, timeout=30) as client:
        process = start_probe(cache, tmp_path / "out", clusters.dask_scheduler)
        victim = busy_worker(client, process)
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        out, err = process.communicate(timeout=DEADLINE_S)
        assert process.returncode == 0, out + err
        assert (tmp_path / "out" / "results.csv").read_bytes() == local
        # The scheduler saw the worker go: its tasks were rerun elsewhere, and its nanny
        # started a new worker (a new address), which later tests use.
        assert victim not in client.scheduler_info()["workers"]
        client.wait_for_workers(2, timeout=120)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_scheduler_gone_mid_sweep_is_one_line_exit_1_and_nothing_published(
    clusters, sweep, tmp_path
):
    import distributed

    cache, _ = sweep
    address = f"tcp://127.0.0.1:{free_port()}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", address.rsplit(":", 1)[1], "--no-dashboard"], **quiet,
    )  # fmt: skip
    # two threads: with one, joblib would run the sweep in the probe process, not on Dask
    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
         "--nthreads", "2", "--no-dashboard", "--local-directory", str(tmp_path / "w")], **quiet,
    )  # fmt: skip
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=120)
            # more seeds than the other tests: a longer sweep to stop in the middle of
            process = start_probe(cache, tmp_path / "out", address, "--seeds", "10")
            deadline = time.monotonic() + DEADLINE_S
            while not client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
                assert process.poll() is None, "the sweep ended before a task was seen"
                assert time.monotonic() < deadline, "no sweep task reached the scheduler"
                time.sleep(0.02)
            scheduler.kill()
        out, err = process.communicate(timeout=DEADLINE_S)
    finally:
        for started in (worker, scheduler):
            started.kill()
            started.wait()
    assert process.returncode == 1, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the dask scheduler"), err
    assert "went away during the sweep" in lines[0] and "rerun the same command" in lines[0]
    assert not (tmp_path / "out").exists(), "nothing published"
