"""Where a sweep's (store, pooling) tasks run: local joblib workers, or a Dask cluster.

joblib's Dask backend carries the same `Parallel` call to dask.distributed: `local:N` starts a
LocalCluster of N single-threaded worker processes on loopback; `tcp://HOST:PORT` connects to a
running scheduler whose workers see the same cache path. Dask reruns the task of a worker that
dies. Nothing here schedules work itself.
"""

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

from medprobe.cache.errors import ToolkitError

logger = logging.getLogger(__name__)

CLUSTER_EXTRA = "pip install 'medprobe[cluster]'"


@dataclass(frozen=True)
class ClusterSpec:
    """`local_workers` for a LocalCluster, or `address` of a running scheduler."""

    local_workers: int | None = None
    address: str | None = None


def parse_cluster(text: str) -> ClusterSpec:
    """'local:N' or 'tcp://HOST:PORT' (also tls://), checked before any work."""
    kind, sep, rest = text.partition(":")
    if kind == "local" and sep:
        if rest.isdigit() and int(rest) >= 1:
            return ClusterSpec(local_workers=int(rest))
    elif kind in ("tcp", "tls") and rest.startswith("//") and ":" in rest[2:]:
        return ClusterSpec(address=text)
    raise ToolkitError(
        f"cluster={text!r}: expected local:N (N worker processes here) or tcp://HOST:PORT "
        "(a running dask scheduler)",
        argument="cluster",
    )


def _import_distributed() -> ModuleType:
    """dask.distributed, imported only when a cluster is asked for."""
    try:
        import distributed
    except ImportError:
        raise ToolkitError(
            f"cluster=…: probing on a Dask cluster needs dask and distributed: {CLUSTER_EXTRA}",
            argument="cluster",
        ) from None
    return distributed


@contextlib.contextmanager
def parallel_backend(spec: ClusterSpec | None) -> Iterator[int | None]:
    """Run the enclosed joblib `Parallel` calls on the cluster; yields the n_jobs to use there
    (-1: every worker), or None without a cluster (keep the caller's)."""
    if spec is None:
        yield None
        return
    distributed = _import_distributed()
    import joblib

    with _distributed_quiet(), contextlib.ExitStack() as stack:
        if spec.local_workers is not None:
            cluster = distributed.LocalCluster(
                n_workers=spec.local_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                # a free port: the default, 8787, warns when another cluster holds it
                dashboard_address="127.0.0.1:0",
            )
            stack.callback(cluster.close)
            client = distributed.Client(cluster)
        else:
            try:
                client = distributed.Client(spec.address, timeout="20s")
            except OSError as error:
                raise ToolkitError(
                    f"cluster={spec.address!r}: no dask scheduler answered ({error}); start one "
                    "with `dask scheduler` and workers with `dask worker ADDRESS`",
                    argument="cluster",
                ) from None
        stack.callback(client.close)
        logger.info("probing on %s", client)
        with joblib.parallel_config(backend="dask"):
            try:
                yield -1
            except _lost_scheduler_errors(distributed) as error:
                raise ClusterLost(
                    f"the dask scheduler {client.scheduler.address} went away during the sweep "
                    f"({type(error).__name__}); nothing was published. Restart the scheduler "
                    "and rerun the same command"
                ) from None


class ClusterLost(ToolkitError):
    """The Dask scheduler went away mid-sweep: a failure (exit 1), not a user's mistake."""

    exit_code = 1


def _lost_scheduler_errors(distributed: ModuleType) -> tuple[type[BaseException], ...]:
    """What joblib's Dask backend raises when the client loses its scheduler: futures it can no
    longer follow are cancelled, and calls on the closed connection fail."""
    from concurrent.futures import CancelledError as FuturesCancelled

    from distributed.comm.core import CommClosedError

    return (distributed.client.FutureCancelledError, FuturesCancelled, CommClosedError)


@contextlib.contextmanager
def _distributed_quiet() -> Iterator[None]:
    """distributed logs every worker, client and connection at INFO (dozens of lines for one
    sweep); only its warnings show, unless the run is verbose (`-v`). The client's own errors
    (tracebacks of its attempts to reconnect to a lost scheduler) are what `ClusterLost` says
    in one line, so they show only with `-v`."""
    levels = {"distributed": logging.WARNING, "distributed.client": logging.CRITICAL}
    loggers = {name: logging.getLogger(name) for name in levels}
    previous = {name: log.level for name, log in loggers.items()}
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        for name, log in loggers.items():
            log.setLevel(levels[name])
    try:
        yield
    finally:
        for name, log in loggers.items():
            log.setLevel(previous[name])
