"""`extract submit`: one extraction's shards as jobs of a cluster's own scheduler, via submitit.

Each job runs what `extract run --shard i/N` runs, in the library; the last shard to finish joins
the shard stores into the usual store (`shards.join_shards`). Nothing is scheduled here: SLURM
(one job array) or submitit's local executor (one process per shard) does that. A job that is
preempted or reaches its time limit is requeued by submitit and resumes from its journal; a job
that failed is rerun by submitting the same command again.
"""

import contextlib
import logging
import math
import os
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.root import resolve_cache_root
from medprobe.extract.api import extraction_options, model_names
from medprobe.extract.config import ConfiguredDataset
from medprobe.extract.datasets import build_dataset
from medprobe.extract.models import resolve_model
from medprobe.extract.options import ExtractionOptions, check_models
from medprobe.extract.pipeline import ExtractionReport, extract_dataset
from medprobe.extract.plan import select_rows
from medprobe.extract.scaleout.tracking import ShardLedger, shard_ledger
from medprobe.extract.scaleout.waiting import ShardStatus, Submission

if TYPE_CHECKING:
    from submitit import Job
    from submitit.helpers import DelayedSubmission

    from medprobe.extract.pipeline import ExtractionReport

logger = logging.getLogger(__name__)

EXECUTORS = ("slurm", "local")
DEFAULT_TIME = "24:00:00"
JOB_NAME = "medprobe-extract"
CLUSTER_EXTRA = "pip install 'medprobe[cluster]'"


@dataclass(frozen=True)
class ShardRequest:
    """What `extract run` would be given, to be run as N shards elsewhere (absolute paths)."""

    models: tuple[str, ...]
    dataset: ConfiguredDataset
    cache_root: Path
    options: ExtractionOptions

    def run(self, shard: tuple[int, int] | None) -> ExtractionReport:
        """Extract one shard (or, with None, everything) exactly as `extract run` does."""
        specs = [resolve_model(name) for name in self.models]
        dataset = build_dataset(self.dataset.name, self.dataset.path, **self.dataset.options)
        options = replace(self.options, shard=shard)
        return extract_dataset(dataset, specs, cache_root=self.cache_root, options=options)

    def ledger(self, count: int) -> ShardLedger:
        """Where this extraction's stores stand when run as `count` shards."""
        return shard_ledger(self.dataset, self.models, self.cache_root, self.options, count)


def plan_request(
    dataset: str,
    models: str | Sequence[str],
    *,
    shards: int,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    dataset_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> ShardRequest:
    """What N shard jobs will run (absolute paths, which jobs on other nodes need), checked
    here so that a bad model name, option or dataset fails once, not in N jobs."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ToolkitError(f"shards={shards!r}: must be at least 1", argument="shards")
    names = model_names(models)
    run_options = extraction_options(device, progress=False, **options)
    if run_options.weights is not None:
        run_options = replace(run_options, weights=Path(run_options.weights).absolute())
    specs = [resolve_model(name) for name in names]
    check_models(specs, run_options)
    root = resolve_cache_root(cache_dir).absolute()
    data_path = (Path(data_dir) if data_dir is not None else Path("data") / dataset).absolute()
    loaded = build_dataset(dataset, data_path, **(dataset_options or {}))
    n_images = len(select_rows(len(loaded.rows), run_options.limit))
    if shards > n_images:
        raise ToolkitError(
            f"shards={shards}: more shards than the {n_images} images to embed", argument="shards"
        )
    return ShardRequest(
        models=tuple(names),
        dataset=ConfiguredDataset(dataset, data_path, dict(dataset_options or {})),
        cache_root=root,
        options=run_options,
    )


class ShardJob:
    """Shard `index` of `count` as a submitit job.

    It has submitit's checkpoint protocol (what `submitit.helpers.Checkpointable` provides, which
    submitit looks for by name): on preemption or timeout submitit calls `checkpoint()` and
    requeues the job it returns, this same shard, which resumes from its journal. Not a subclass,
    so this module imports without the `cluster` extra.
    """

    def __init__(self, request: ShardRequest, index: int, count: int) -> None:
        self.request = request
        self.index = index
        self.count = count

    def __call__(self) -> ExtractionReport:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        logger.info("shard %d/%d of %s", self.index, self.count, self.request.dataset.name)
        return self.request.run((self.index, self.count) if self.count > 1 else None)

    def checkpoint(self) -> "DelayedSubmission":
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


@dataclass(frozen=True)
class SlurmResources:
    """What each shard job asks SLURM for; None leaves the cluster's default."""

    partition: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None  # as sbatch takes it: 64G, 500M
    time: str = DEFAULT_TIME  # as sbatch takes it: minutes, H:M:S, D-H:M:S
    account: str | None = None
    qos: str | None = None
    array_parallelism: int | None = None

    def __post_init__(self) -> None:
        smallest = {"gpus_per_node": 0, "cpus_per_task": 1, "array_parallelism": 1}
        for name, least in smallest.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ToolkitError(
                    f"{name}={value!r}: must be a whole number of at least {least}, or left "
                    "unset for the cluster's default",
                    argument=name,
                )


def parse_time(text: str) -> int:
    """sbatch's --time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in whole minutes, rounded
    up, as submitit's `timeout_min` takes them."""
    days_text, dash, clock = text.partition("-")
    if not dash:
        days_text, clock = "0", text
    try:
        days = int(days_text)
        fields = [int(part) for part in clock.split(":")]
    except ValueError:
        fields = []
    if dash:
        shapes = {1: (1, 0, 0), 2: (1, 1, 0), 3: (1, 1, 1)}  # D-H, D-H:M, D-H:M:S
    else:
        shapes = {1: (0, 1, 0), 2: (0, 1, 1), 3: (1, 1, 1)}  # M, M:S, H:M:S
    if len(fields) not in shapes or min(fields, default=-1) < 0:
        raise ToolkitError(
            f"time={text!r}: expected minutes or [D-]HH:MM:SS as sbatch takes it, e.g. 240, "
            "4:00:00 or 1-00:00:00",
            argument="time",
        )
    it = iter(fields)
    hours, minutes, seconds = (next(it) if used else 0 for used in shapes[len(fields)])
    total_seconds = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total_seconds <= 0:
        raise ToolkitError(f"time={text!r}: must be more than zero", argument="time")
    return math.ceil(total_seconds / 60)


def default_log_folder(cache_root: Path) -> Path:
    """`<cache_root>/submitit/<timestamp>`: on the cache's file system, which SLURM jobs share."""
    return Path(cache_root) / "submitit" / datetime.now().strftime("%Y%m%d-%H%M%S")


def submit(
    request: ShardRequest,
    *,
    executor: str,
    shards: int,
    log_folder: Path | None = None,
    resources: SlurmResources = SlurmResources(),
) -> Submission:
    """Submit `shards` jobs, shard i of `shards` each, and return them (not waiting).

    executor: 'slurm' (one job array, `resources` per job) or 'local' (one process per shard on
    this machine; shard i takes GPU i mod `resources.gpus_per_node`, default every GPU here).
    """
    if executor not in EXECUTORS:
        raise ToolkitError(
            f"executor={executor!r}: choose one of {list(EXECUTORS)}", argument="executor"
        )
    if shards < 1:
        raise ToolkitError(f"shards={shards}: must be at least 1", argument="shards")
    timeout_min = parse_time(resources.time)
    try:
        import submitit
    except ImportError as error:
        raise ToolkitError(
            f"extract submit runs jobs through submitit, which is not installed: {CLUSTER_EXTRA}"
        ) from error
    ledger = request.ledger(shards)
    pending = ledger.pending()
    folder = Path(log_folder or default_log_folder(request.cache_root)).absolute()
    if not pending:
        logger.info("every store of this extraction is complete; nothing submitted")
        return Submission(ledger, executor, folder, [], [], already_complete=ledger.joined() or [])
    jobs_to_run = [ShardJob(request, index, shards) for index in pending]
    if executor == "local":
        jobs = _submit_local(submitit, folder, jobs_to_run, timeout_min, resources.gpus_per_node)
    else:
        jobs = _submit_slurm(submitit, folder, jobs_to_run, timeout_min, resources)
    statuses = [
        ShardStatus(index, job.job_id, job.paths.stdout, job.paths.stderr)
        for index, job in zip(pending, jobs, strict=True)
    ]
    logger.info("submitted shards %s of %d to %s; logs in %s", pending, shards, executor, folder)
    return Submission(ledger, executor, folder, statuses, jobs)


def _submit_local(
    submitit: Any,
    folder: Path,
    shard_jobs: list[ShardJob],
    timeout_min: int,
    gpus: int | None,
) -> list["Job[ExtractionReport]"]:
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=timeout_min)
    jobs = []
    with _sigint_ignored():
        for shard_job in shard_jobs:
            # submitit hides every GPU from a local job unless told which it may see.
            if gpus:
                executor.update_parameters(gpus_per_node=1, visible_gpus=[shard_job.index % gpus])
            jobs.append(executor.submit(shard_job))
    return jobs


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Processes started inside ignore SIGINT (an ignored signal stays ignored across exec, and
    Python then installs no KeyboardInterrupt handler): a terminal's Ctrl-C, which goes to the
    whole foreground process group, reaches `extract submit` alone, which stops its local jobs
    itself (`Submission.cancel`) with one message instead of a traceback from each job."""
    if threading.current_thread() is not threading.main_thread():  # signals are main's only
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _submit_slurm(
    submitit: Any,
    folder: Path,
    shard_jobs: list[ShardJob],
    timeout_min: int,
    resources: SlurmResources,
) -> list["Job[ExtractionReport]"]:
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError as error:  # submitit's "Could not detect srun"
        raise ToolkitError(
            f"executor='slurm': {error} Run extract submit on a SLURM login node, or use "
            "--executor local",
            argument="executor",
        ) from error
    executor.update_parameters(
        name=JOB_NAME,
        timeout_min=timeout_min,
        gpus_per_node=resources.gpus_per_node,
        cpus_per_task=resources.cpus_per_task,
        slurm_partition=resources.partition,
        slurm_mem=resources.mem,
        slurm_account=resources.account,
        slurm_qos=resources.qos,
        slurm_array_parallelism=resources.array_parallelism,
    )
    return executor.submit_array(shard_jobs)
