"""A progress bar with images/s and ETA for long passes, quiet when output is not a terminal."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


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
