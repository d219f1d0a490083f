"""A progress bar with images/s and ETA for long passes, quiet when output is not a terminal;
and the progress lines of `extract submit --wait`, which waits on jobs elsewhere."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from medprobe.extract.scaleout.waiting import WaitProgress


@contextmanager
def extraction_progress(
    description: str, *, total: int, completed: int = 0, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n_images)`; the bar starts at `completed` when a run resumes."""
    if not enabled:
        yield lambda n_images: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]} img/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=completed, rate="-")

        def advance(n_images: int) -> None:
            progress.advance(task, n_images)
            speed = progress.tasks[task].speed
            progress.update(task, rate=f"{speed:.0f}" if speed else "-")

        yield advance


class ProgressLines:
    """`extract submit --wait`'s progress: a line when a shard ends, else every 30 s."""

    EVERY_SECONDS = 30.0

    def __init__(self, console: Console) -> None:
        self.console = console
        self.shards_done: int | None = None
        self.printed_at = 0.0

    def __call__(self, progress: WaitProgress) -> None:
        if self.shards_done is None:
            # printed from inside the wait, where Ctrl-C is already handled: once a caller
            # reads this line, Ctrl-C cancels the jobs with its message
            self.console.print(
                "  waiting for every shard to end (Ctrl-C cancels the unfinished jobs; rerunning "
                "the same command resumes them) ..."
            )
        now = time.monotonic()
        if progress.shards_done == self.shards_done and now - self.printed_at < self.EVERY_SECONDS:
            return
        self.shards_done, self.printed_at = progress.shards_done, now
        rate = progress.images_per_second
        self.console.print(
            f"  shards done {progress.shards_done}/{progress.shards_total}, images "
            f"{progress.rows_done}/{progress.n_rows}"
            + (f", {rate:.1f} images/s" if rate is not None else "")
        )
