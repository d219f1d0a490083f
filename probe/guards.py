"""Checks of a run's size against this machine, made after the stores are chosen and before any
probe is fitted: a bootstrap too large for the memory fails in a second with both numbers and
the fix, not with a MemoryError after every probe has run.

It reads store metadata only (split sizes, label counts); `run/` and `similarity/` both use it.
"""

import os
from collections.abc import Sequence

import numpy as np

from medprobe.cache import ToolkitError, open_store
from medprobe.cache.files.disk import human_size
from medprobe.probe.budgets import Budget, support_images
from medprobe.probe.stats.bootstrap import CHUNK_ELEMENTS
from medprobe.probe.targets import ProbeTarget

# Bytes per test image and resample while one worker draws a dataset's resamples: the
# per-group draws, the (B, N) int32 counts and their copy in the store's row order.
COUNT_BYTES = 3 * 4
# Bytes per entry of what each cell being scored holds for a chunk of resamples: its (slots x
# chunk) table of sums and the chunk's counts as (images x chunk) weights, float64
# (`stats.weighted_sums`), each at most CHUNK_ELEMENTS entries.
TABLE_BYTES = 2 * 8
# Bytes per resample of each metric of each probe kept until the summary (float64).
KEPT_BYTES = 8
# Metrics every single-label probe keeps per resample (accuracy, balanced accuracy, macro-F1,
# macro AUROC, ECE, Brier, log loss, and the headline's own); a multi-label probe adds one
# AUROC per label.
SINGLE_LABEL_METRICS = 8


def available_memory() -> int | None:
    """Bytes the kernel says a new allocation can use without swapping (MemAvailable), or
    None where it does not say (then no check is made)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def bootstrap_bytes(
    targets: Sequence[ProbeTarget],
    n_resamples: int,
    *,
    n_cells_per_target: int,
    workers: int,
    scoring_threads: int,
) -> tuple[int, int]:
    """(bytes, largest test split): a lower estimate of the memory the test bootstrap needs,
    the resample counts of the largest test split in each of `workers` processes, the sums of
    the `scoring_threads` cells scored at once (all workers' together), and every probe's
    metric on every resample, kept for the summary."""
    largest, kept = 0, 0
    for target in targets:
        store = open_store(target.path)
        n_test = store.n_rows.get("test", 0)
        largest = max(largest, n_test)
        labels = store.task.get("label_names") or []
        n_metrics = SINGLE_LABEL_METRICS + (
            len(labels) if store.task.get("kind") == "multilabel" else 0
        )
        kept += KEPT_BYTES * n_resamples * n_cells_per_target * n_metrics
    workers = max(1, min(workers, len(targets)))
    tables = TABLE_BYTES * min(CHUNK_ELEMENTS, n_resamples * largest) * scoring_threads
    return COUNT_BYTES * n_resamples * largest * workers + tables + kept, largest


def check_bootstrap_memory(
    targets: Sequence[ProbeTarget],
    n_resamples: int,
    *,
    n_cells_per_target: int,
    workers: int,
    scoring_threads: int,
) -> None:
    """Refuse a probe run's test bootstrap whose estimated memory exceeds what is available."""
    if not n_resamples or not targets:
        return
    needed, largest = bootstrap_bytes(
        targets,
        n_resamples,
        n_cells_per_target=n_cells_per_target,
        workers=workers,
        scoring_threads=scoring_threads,
    )
    refuse_past_memory(
        needed,
        argument="bootstrap",
        value=n_resamples,
        what=f"the bootstrap ({n_resamples:,} resamples of up to {largest:,} test images, for "
        f"{len(targets)} stores x poolings)",
        fix="probe fewer stores at once, or pass bootstrap=0",
    )


# Bytes of one tidy result row while the run holds it (a dict of ten fields).
ROW_BYTES = 1_000


def check_seeds_memory(
    targets: Sequence[ProbeTarget],
    *,
    seeds: int,
    draws: Sequence[tuple[Budget, int]],
    n_cells_per_target: int,
) -> None:
    """Refuse a number of seeds whose support sets (ids kept for every (dataset, budget, seed))
    and result rows would not fit in the memory available. `draws`: each budget and how many
    support sets are drawn for it."""
    if not targets:
        return
    needed, largest = 0, 0
    for dataset in dict.fromkeys(t.dataset for t in targets):
        store = open_store(next(t.path for t in targets if t.dataset == dataset))
        id_bytes = np.asarray(store.ids("train", slice(0, 1000))).astype(str).itemsize or 4
        n_train = store.n_rows.get("train", 0)
        names = store.task.get("label_names") or []
        n_strata = max(1, len(names) * (2 if store.task.get("kind") == "multilabel" else 1))
        for budget, n_draws in draws:
            images = support_images(budget, n_train, n_strata)
            needed += images * n_draws * id_bytes
            largest = max(largest, images)
    for target in targets:
        task = open_store(target.path).task
        labels = len(task.get("label_names") or []) if task.get("kind") == "multilabel" else 0
        needed += ROW_BYTES * n_cells_per_target * (SINGLE_LABEL_METRICS + labels)
    refuse_past_memory(
        needed,
        argument="seeds",
        value=seeds,
        what=f"the support sets and result rows ({seeds:,} seeds per budget, up to "
        f"{largest:,} labelled images each, for {len(targets)} stores x poolings)",
        fix="or probe fewer budgets or stores at once",
    )


def refuse_past_memory(needed: int, *, argument: str, value: int, what: str, fix: str) -> None:
    """A ToolkitError naming the estimate, the memory available and the fix when `needed`
    bytes exceed what the machine has available; nothing where it cannot tell."""
    available = available_memory()
    if available is None or needed <= available:
        return
    affordable = value * available // needed
    raise ToolkitError(
        f"{argument}={value}: {what} would take about {human_size(needed)}; this machine has "
        f"{human_size(available)} of memory available; lower {argument} to about "
        f"{affordable:,} or fewer, {fix}",
        argument=argument,
    )
