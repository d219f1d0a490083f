"""The real engines: a one-node SLURM cluster and a Dask scheduler with two workers, started by
`ci/clusters up` (which `make test-clusters` runs). Where they are not up these tests skip,
saying how to start them; `make test-clusters` sets MEDPROBE_REQUIRE_CLUSTERS=1, which turns a
missing service into a failure, so CI never passes by skipping them."""

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.extract.conftest import test_vit_weights  # noqa: F401  (a fixture, shared)

STATE = Path(os.environ.get("MEDPROBE_CLUSTERS_DIR", "/tmp/medprobe-clusters"))
REQUIRE = "MEDPROBE_REQUIRE_CLUSTERS"


@dataclass(frozen=True)
class Clusters:
    """Where the test clusters answer: SLURM's config (clients read SLURM_CONF), its partition,
    and the Dask scheduler's address."""

    slurm_conf: Path
    partition: str
    dask_scheduler: str

    def slurm(self, *args: str, timeout: float = 30) -> str:
        """A SLURM client command against the test cluster; its stdout."""
        env = {**os.environ, "SLURM_CONF": str(self.slurm_conf)}
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{args}: {done.stderr}"
        return done.stdout


def _unavailable(reason: str) -> None:
    message = f"{reason}: start the test clusters with `ci/clusters up` (or `make test-clusters`)"
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="session")
def clusters() -> Clusters:
    env_file = STATE / "env"
    if not env_file.is_file():
        _unavailable(f"no {env_file}")
    env = _read_env(env_file)
    found = Clusters(
        Path(env["SLURM_CONF"]), env["MEDPROBE_SLURM_PARTITION"], env["MEDPROBE_DASK_SCHEDULER"]
    )
    ping = subprocess.run(
        ["scontrol", "ping"],
        env={**os.environ, "SLURM_CONF": str(found.slurm_conf)},
        capture_output=True,
        text=True,
    )
    if ping.returncode != 0 or "UP" not in ping.stdout:
        _unavailable(f"slurmctld does not answer ({ping.stdout.strip()} {ping.stderr.strip()})")
    host, port = found.dask_scheduler.removeprefix("tcp://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        _unavailable(f"no Dask scheduler at {found.dask_scheduler} ({error})")
    return found


@pytest.fixture
def slurm_env(clusters, monkeypatch) -> Clusters:
    """This process and the commands it starts talk to the test SLURM (submitit calls sbatch)."""
    monkeypatch.setenv("SLURM_CONF", str(clusters.slurm_conf))
    return clusters
