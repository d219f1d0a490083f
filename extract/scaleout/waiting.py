"""Shard jobs in flight (`Submission`): waiting for them with progress read from the cache, and
what Ctrl-C does to them.

Ctrl-C while waiting cancels the jobs this submission started and are still running (SLURM:
`scancel`; local: the job processes are stopped). That is the one choice that keeps a rerun
safe: the rerun submits every unfinished shard again, and a job still running from before would
then compete with it for the shard's store. Nothing is lost: each job journals its rows as it
goes, and the rerun resumes every shard from its journal. To leave jobs running, submit without
`--wait` (the default for SLURM) and come back later.
"""

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medprobe.cache.errors import Interrupted
from medprobe.extract.scaleout.shards import shard_root
from medprobe.extract.scaleout.tracking import ShardLedger

if TYPE_CHECKING:
    from submitit import Job

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
RESUME = (
    "Rerun the same command to resume: complete shards are kept and only the others are "
    "submitted, each from its journal."
)


@dataclass
class ShardStatus:
    """One shard job: its id, its logs, and (once it ended) why it failed, or None."""

    index: int
    job_id: str
    stdout: Path
    stderr: Path
    error: str | None = None


@dataclass
class SubmissionResult:
    """After every job ended: the shards that failed and the stores that exist."""

    failed: list[ShardStatus] = field(default_factory=list)
    stores: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class WaitProgress:
    """Where the extraction stands while waiting: shards complete of all `shards_total` (those
    complete before this submission included), rows embedded of `n_rows`, and images per second
    since the wait began (None until rows moved)."""

    shards_done: int
    shards_total: int
    rows_done: int
    n_rows: int
    images_per_second: float | None


@dataclass
class Submission:
    """Shard jobs in flight: their ids and log folder now, their outcome from `wait()`.

    shards/jobs: the shards submitted (those not complete before); none when the store was
    already complete (`already_complete` then lists it).
    """

    ledger: ShardLedger
    executor: str
    log_folder: Path
    shards: list[ShardStatus]
    jobs: list["Job[Any]"]
    already_complete: list[Path] = field(default_factory=list)

    def wait(
        self,
        on_progress: Callable[[WaitProgress], None] | None = None,
        *,
        poll_seconds: float = POLL_SECONDS,
    ) -> SubmissionResult:
        """Block until every shard job ended; the stores they wrote or joined, and the failures.
        `on_progress` is called on every poll. Ctrl-C cancels the unfinished jobs (see the
        module's docstring) and raises `Interrupted` saying so and how to resume.

        The store is joined by the last shard to finish, so when no shard failed it exists."""
        if not self.jobs:
            return SubmissionResult(stores=list(self.already_complete))
        try:
            self._follow(on_progress, poll_seconds)
            return self._outcome()
        except KeyboardInterrupt:
            cancelled = self.cancel()
            raise Interrupted(self._interrupted_message(cancelled)) from None

    def _follow(
        self, on_progress: Callable[[WaitProgress], None] | None, poll_seconds: float
    ) -> None:
        started, rows_at_start = time.monotonic(), self.ledger.rows_done()
        complete_before = self.ledger.count - len(self.jobs)
        while True:
            finished = sum(self._ended())
            if on_progress is not None:
                rows = self.ledger.rows_done()
                elapsed = time.monotonic() - started
                moved = rows - rows_at_start
                on_progress(
                    WaitProgress(
                        shards_done=complete_before + finished,
                        shards_total=self.ledger.count,
                        rows_done=rows,
                        n_rows=self.ledger.n_rows,
                        images_per_second=moved / elapsed if moved > 0 and elapsed > 0 else None,
                    )
                )
            if finished == len(self.jobs):
                return
            time.sleep(poll_seconds)

    def _ended(self) -> list[bool]:
        """Per job, whether it ended. On SLURM: it wrote its result, or `squeue` no longer
        lists it (cancelled, killed, out of time); submitit would ask `sacct`, which a cluster
        without accounting cannot answer (a job writes its result before it leaves the queue)."""
        if self.executor != "slurm":
            return [job.done() for job in self.jobs]
        queued = _slurm_queued([job.job_id for job in self.jobs])
        return [job.paths.result_pickle.exists() or job.job_id not in queued for job in self.jobs]

    def _outcome(self) -> SubmissionResult:
        result = SubmissionResult()
        shard_stores = shard_root(self.ledger.cache_root)
        for status, job, done in zip(self.shards, self.jobs, self._ended(), strict=True):
            if not done or (self.executor == "slurm" and not job.paths.result_pickle.exists()):
                status.error = (
                    "the job ended without a result: cancelled, killed, or out of time "
                    "(SLURM no longer lists it)"
                )
                result.failed.append(status)
                continue
            error = job.exception()
            if error is not None:
                status.error = _failure_summary(error)
                result.failed.append(status)
                continue
            report = job.result()
            for path in report.joined + report.written + report.skipped_complete:
                if shard_stores not in path.parents and path not in result.stores:
                    result.stores.append(path)
        result.stores = [p for p in result.stores if p.exists()]
        return result

    def cancel(self) -> list[ShardStatus]:
        """Cancel the jobs of this submission that have not ended; returns their shards."""
        unfinished = [
            (status, job)
            for status, job, ended in zip(self.shards, self.jobs, self._ended(), strict=True)
            if not ended
        ]
        for _, job in unfinished:
            if self.executor == "slurm":
                job.cancel(check=False)
            else:
                _stop_local_job(job)
        return [status for status, _ in unfinished]

    def _interrupted_message(self, cancelled: list[ShardStatus]) -> str:
        if not cancelled:
            return f"stopped waiting; every shard job had already ended. {RESUME}"
        ids = ", ".join(s.job_id for s in cancelled)
        how = "cancelled (scancel)" if self.executor == "slurm" else "stopped"
        return (
            f"stopped waiting; {how} the {len(cancelled)} unfinished {self.executor} shard "
            f"job(s) it had submitted ({ids}); the rows they wrote are kept in their journals. "
            f"{RESUME} Logs: {self.log_folder}"
        )


def _slurm_queued(job_ids: list[str]) -> set[str]:
    """The jobs of `job_ids` (array tasks as ARRAY_TASK) that SLURM still lists (pending,
    running, completing); every one of them when squeue cannot be asked, so none is taken for
    ended on a failed query."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    try:
        listed = subprocess.run(
            ["squeue", "--noheader", "--array", "--format=%i", f"--jobs={','.join(arrays)}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return set(job_ids)
    if listed.returncode != 0:
        # squeue refuses ids it has forgotten ("Invalid job id specified"): none is queued
        return set() if "Invalid job id" in listed.stderr else set(job_ids)
    return set(listed.stdout.split())


def _stop_local_job(job: "Job[Any]") -> None:
    """Kill a local job's task processes and its submitit controller. The tasks ignore
    SIGINT (they were started that way, so a terminal's Ctrl-C reaches only `extract submit`)
    and submitit's job handler bypasses SIGTERM, so they are killed; what they wrote is in their
    journal, which a rerun resumes from."""
    controller = getattr(job, "_process", None)
    if controller is None or controller.poll() is not None:
        return
    children = Path(f"/proc/{controller.pid}/task/{controller.pid}/children")
    try:
        task_pids = [int(pid) for pid in children.read_text().split()]
    except OSError:  # not Linux, or the controller just ended
        task_pids = []
    for pid in [*task_pids, controller.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    controller.wait()


def _failure_summary(error: BaseException) -> str:
    """The exception a failed job raised (its traceback's last line), or, for a job that never
    returned (killed, out of memory, out of time), submitit's account of it."""
    from submitit.core.utils import FailedJobError

    message = str(error).strip()
    rule = "\n----------------------\n"  # submitit frames the job's traceback with these
    if isinstance(error, FailedJobError) and message.count(rule) >= 2:
        lines = [line.strip() for line in message.split(rule)[1].splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return " ".join(message.splitlines()[:2]) or type(error).__name__
