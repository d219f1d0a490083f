"""`mp.probe(...)`: the whole probe run as one library call (`probe run` is a thin layer over it).

Arguments are checked before any store is read; support sets are drawn once per (dataset,
budget, seed) by image id and shared by every model; the (store, pooling) tasks fan out over
joblib workers or a Dask cluster; the outcome is a `Results` that `.save(folder)` publishes.
"""

import difflib
import inspect
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medprobe.cache import ToolkitError, open_store
from medprobe.cache.files.atomic import check_folder_target
from medprobe.cache.files.root import resolve_cache_root
from medprobe.probe.budgets import Budget
from medprobe.probe.guards import check_bootstrap_memory, check_seeds_memory
from medprobe.probe.run.breakdown import SubgroupCells, check_breakdowns, subgroup_table
from medprobe.probe.run.cluster import parallel_backend, parse_cluster
from medprobe.probe.run.results import RUN_FILE, Results
from medprobe.probe.run.settings import ProbeSettings, keyword_signature
from medprobe.probe.run.supports import SupportSets, draw_supports
from medprobe.probe.run.sweep import TargetOutcome, run_sweep, scoring_threads
from medprobe.probe.stats.paired import Resampled, headline_of, paired_differences, summarise
from medprobe.probe.stats.predictions import DatasetPredictions, Predictions
from medprobe.probe.targets import ProbeTarget, headline_left_out, select_targets, task_of

logger = logging.getLogger(__name__)

VERSIONED = ("medprobe", "numpy", "scikit-learn", "torch", "pandas", "joblib")


def probe(cache_dir: str | os.PathLike[str] | None = None, **options: Any) -> Results:
    """Probe every complete store under the cache root (or the `models`, `datasets`,
    `poolings` named) at each label budget and seed, and return the `Results`.

    Every argument is checked before any store is read (`ProbeSettings`, the same checks as
    `probe run`'s flags); support sets are drawn once per (dataset, budget, seed) and shared by
    every model, so the comparison between models is paired. The keywords:
    """
    unknown = sorted(set(options) - {f.name for f in fields(ProbeSettings)})
    if unknown:
        known = [f.name for f in fields(ProbeSettings)]
        close = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
        hints = "; ".join(f"{n}: did you mean {c[0]}?" for n, c in close.items() if c)
        raise ToolkitError(
            f"probe() got unknown arguments {unknown}"
            + (f" ({hints})" if hints else "")
            + f"; it takes {', '.join(known)}"
        )
    call = ", ".join(
        f"{name}={value!r}" for name, value in {"cache_dir": cache_dir, **options}.items()
    )
    return run_probes(ProbeSettings(cache_dir=cache_dir, **options), command=f"mp.probe({call})")


probe.__signature__ = keyword_signature()  # type: ignore[attr-defined]
probe.__doc__ = f"{probe.__doc__}\n{inspect.getdoc(ProbeSettings).split(chr(10), 2)[2]}"


def run_probes(settings: ProbeSettings, *, command: str | None = None) -> Results:
    """The whole run for checked settings: select the stores, draw the supports, sweep every
    (store, pooling) over joblib workers or a Dask cluster, assemble and (with `out`) save.
    `command` is the command line or call that asked for it, kept in run.json for the report."""
    root = resolve_cache_root(settings.cache_dir)
    if settings.out is not None:
        check_folder_target(
            settings.out, overwrite=settings.overwrite, protected=[root], marker=RUN_FILE
        )
    targets = select_targets(
        root,
        models=settings.models,
        datasets=settings.datasets,
        poolings=settings.poolings,
        include_trials=settings.include_trials,
    )
    logger.info(
        "probing %d stores x poolings: %s",
        len(targets),
        ", ".join(f"{t.dataset}/{t.model}:{t.pooling}" for t in targets),
    )
    if settings.subgroups or settings.aggregate:
        first_paths = {t.dataset: t.path for t in reversed(targets)}
        check_breakdowns(list(first_paths.values()), settings.subgroups, settings.aggregate)
    cluster_spec = parse_cluster(settings.cluster) if settings.cluster is not None else None
    workers = settings.jobs if settings.jobs > 0 else (os.cpu_count() or 1) + 1 + settings.jobs
    if cluster_spec is not None:  # a remote cluster's workers use their own machines' memory
        workers = cluster_spec.local_workers or 1
    check_bootstrap_memory(
        targets,
        settings.bootstrap,
        n_cells_per_target=_cells_per_target(settings),
        workers=workers,
        scoring_threads=workers * scoring_threads(workers),
    )
    check_seeds_memory(
        targets,
        seeds=settings.seeds,
        draws=[(b, len(settings.seeds_for(b))) for b in settings.budgets],
        n_cells_per_target=_cells_per_target(settings),
    )
    supports = draw_supports(targets, settings)
    logger.info(
        "drew %d support sets (%d budgets x seeds per dataset)",
        len(supports),
        sum(len(settings.seeds_for(b)) for b in settings.budgets),
    )
    support_sizes = _support_sizes(targets, supports)
    started = time.perf_counter()
    done = 0

    def target_done(target: ProbeTarget) -> None:
        nonlocal done
        done += 1
        bar.advance(task)
        logger.info(
            "probed %s/%s:%s (%d of %d) at %.1f s",
            target.dataset,
            target.model,
            target.pooling,
            done,
            len(targets),
            time.perf_counter() - started,
        )

    with (
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not settings.progress,
        ) as bar,
        parallel_backend(cluster_spec) as cluster_jobs,
    ):
        task = bar.add_task("probing stores x poolings", total=len(targets))
        outcomes = run_sweep(
            targets,
            supports,
            settings if cluster_jobs is None else replace(settings, jobs=cluster_jobs),
            on_target_done=target_done,
        )
    elapsed = time.perf_counter() - started
    results = assemble_results(targets, outcomes, supports, settings)
    results.run.update(_run_record(targets, settings, elapsed))
    results.run["support_sizes"] = support_sizes
    results.run["command"] = command
    if settings.out is not None:
        results.save(settings.out, overwrite=settings.overwrite, protected=[root])
        logger.info("published %s", settings.out)
    return results


def _cells_per_target(settings: ProbeSettings) -> int:
    """Probes per (store, pooling): every method (k-NN once per k) at every budget and seed."""
    per_draw = sum(len(settings.knn_k) if m == "knn" else 1 for m in settings.methods)
    return per_draw * sum(len(settings.seeds_for(b)) for b in settings.budgets)


def _support_sizes(targets: Sequence[ProbeTarget], supports: SupportSets) -> dict[str, Any]:
    """run.json's `support_sizes`: per 'dataset|budget', the labelled images drawn (the mean over
    seeds) and the fraction of the train split they are. A fraction so small that it rounds to
    no image of a class still draws one per class: said here and warned, since the budget's label
    ('0.0001 of train') then understates what the probes saw."""
    n_train = {t.dataset: open_store(t.path).n_rows.get("train", 0) for t in targets}
    drawn: dict[tuple[str, Budget], list[int]] = {}
    for (dataset, budget, _), ids in supports.items():
        drawn.setdefault((dataset, budget), []).append(len(ids))
    sizes = {}
    for (dataset, budget), counts in drawn.items():
        images = float(np.mean(counts))
        realised = images / n_train[dataset] if n_train[dataset] else float("nan")
        sizes[f"{dataset}|{budget.label}"] = {"images": images, "fraction_of_train": realised}
        if budget.kind == "fraction" and realised > 1.5 * budget.value:
            logger.warning(
                "fractions=%g of %s's %d training images rounds to no image of some class; at "
                "least one per class was drawn: %g images, %.3g of train (rows are labelled "
                "%r; run.json's support_sizes holds the images drawn)",
                budget.value,
                dataset,
                n_train[dataset],
                images,
                realised,
                budget.label,
            )
    return sizes


def assemble_results(
    targets: Sequence[ProbeTarget],
    outcomes: Sequence[TargetOutcome],
    supports: SupportSets,
    settings: ProbeSettings,
) -> Results:
    """The run's tables from what every target gave: rows, the summary with its intervals, the
    paired comparisons on each dataset's headline metric, and the calibration bins."""
    frame = pd.DataFrame([row for outcome in outcomes for row in outcome.rows])
    resampled: Resampled = {
        (t.dataset, t.model, t.pooling, method, budget, seed): values
        for t, outcome in zip(targets, outcomes, strict=True)
        for (method, budget, seed), values in outcome.resampled.items()
    }
    scores = _collect_predictions(targets, outcomes)
    summary = summarise(frame, resampled)
    first_store = {t.dataset: open_store(t.path) for t in reversed(targets)}
    tasks = {dataset: task_of(store) for dataset, store in sorted(first_store.items())}
    for dataset, task in tasks.items():
        task["headline_leaves_out"] = headline_left_out(first_store[dataset])
    paired_tables = []
    for dataset, task in tasks.items():
        part = frame[frame["dataset"] == dataset]
        metric = headline_of(task, summary[summary["dataset"] == dataset])
        # DeLong reads per-image scores: under `aggregate` the test set is scored per unit
        image_scores = None if settings.aggregate else scores.datasets.get(dataset)
        paired = paired_differences(part, metric, resampled, image_scores)
        if not paired.empty:
            paired.insert(0, "dataset", dataset)
            paired.insert(1, "metric", metric)
            paired_tables.append(paired)
    return Results(
        frame=frame,
        summary_table=summary,
        paired_table=pd.concat(paired_tables, ignore_index=True)
        if paired_tables
        else pd.DataFrame(),
        calibration=_calibration_table(targets, outcomes),
        subgroups_table=subgroup_table(_subgroup_cells(targets, outcomes), summary, tasks)
        if settings.subgroups
        else pd.DataFrame(),
        run={
            "aggregated": {
                t.dataset: outcome.units
                for t, outcome in zip(targets, outcomes, strict=True)
                if outcome.units is not None
            },
            "datasets": tasks,
            "logistic_regression_fits": _fit_record(outcomes),
            "resampled_by_group": {
                dataset: settings.bootstrap > 0 and store.groups("test") is not None
                for dataset, store in sorted(first_store.items())
            },
        },
        supports=supports_record(supports),
        predictions=scores if settings.save_predictions else None,
    )


def _subgroup_cells(
    targets: Sequence[ProbeTarget], outcomes: Sequence[TargetOutcome]
) -> SubgroupCells:
    """Every probe's per-attribute group numbers, the seeds of a cell together."""
    cells: SubgroupCells = {}
    for target, outcome in zip(targets, outcomes, strict=True):
        for (method, budget, _), per_attribute in outcome.subgroups.items():
            for scores in per_attribute:
                key = (target.dataset, target.model, target.pooling, method, budget)
                cells.setdefault((*key, scores.attribute), []).append(scores)
    return cells


def _fit_record(outcomes: Sequence[TargetOutcome]) -> dict[str, Any]:
    """How the final logistic-regression fits stopped: counts, and in full every fit that used
    up its iterations (its scores are the last iterate's, so a reader must be able to find it)."""
    reports = [report for outcome in outcomes for report in outcome.fit_reports]
    return {
        "final_fits": len(reports),
        "not_converged": [report for report in reports if not report["converged"]],
        "c_selection_fits_not_converged": sum(r["selection_unconverged"] for r in reports),
    }


def _calibration_table(
    targets: Sequence[ProbeTarget], outcomes: Sequence[TargetOutcome]
) -> pd.DataFrame:
    """Reliability bins per (dataset, model, pooling, method, budget), pooled over seeds: the
    count of predictions per confidence bin, their mean confidence and accuracy."""
    pooled: dict[tuple, list] = {}
    for target, outcome in zip(targets, outcomes, strict=True):
        for (method, budget, _), bins in outcome.reliability.items():
            key = (target.dataset, target.model, target.pooling, method, budget)
            pooled.setdefault(key, []).append(bins)
    rows = []
    for (dataset, model, pooling, method, budget), per_seed in pooled.items():
        count = np.sum([b.count for b in per_seed], axis=0)
        confidence = np.sum([np.nan_to_num(b.confidence) * b.count for b in per_seed], axis=0)
        accuracy = np.sum([np.nan_to_num(b.accuracy) * b.count for b in per_seed], axis=0)
        edges = per_seed[0].edges
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence, accuracy = confidence / count, accuracy / count
        for b in range(len(count)):
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "pooling": pooling,
                    "method": method,
                    "budget": budget,
                    "bin_low": edges[b],
                    "bin_high": edges[b + 1],
                    "count": int(count[b]),
                    "confidence": confidence[b],
                    "accuracy": accuracy[b],
                }
            )
    return pd.DataFrame(rows)


def _collect_predictions(
    targets: Sequence[ProbeTarget], outcomes: Sequence[TargetOutcome]
) -> Predictions:
    """Every outcome's test scores, re-ordered to each dataset's sorted test ids."""
    predictions = Predictions()
    for target, outcome in zip(targets, outcomes, strict=True):
        part = predictions.datasets.get(target.dataset)
        if part is None:
            store = open_store(target.path)
            test_ids = store.ids("test")
            labels = store.labels("test")
            mask = store.label_mask("test")
            if mask is not None:
                labels = np.where(mask, labels, -1).astype(np.int8)
            order = np.argsort(test_ids.astype(str), kind="stable")
            groups = store.groups("test")
            part = DatasetPredictions(
                test_ids[order], labels[order], groups=None if groups is None else groups[order]
            )
            predictions.datasets[target.dataset] = part
        for (method, budget, seed), scores in outcome.scores.items():
            part.add((target.model, target.pooling, method, budget, seed), outcome.test_ids, scores)
    return predictions


def _run_record(
    targets: Sequence[ProbeTarget], settings: ProbeSettings, seconds: float
) -> dict[str, Any]:
    """run.json beside the datasets' tasks: every setting, the stores and their keys, versions."""
    paths = sorted({t.path for t in targets})
    stores = [_store_record(path) for path in paths]
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    record = {
        "config": settings.record(),
        "stores": stores,
        "seconds": round(seconds, 2),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions,
        "python": platform.python_version(),
    }
    return json.loads(json.dumps(record))  # as run.json will hold it: lists, not tuples


def _store_record(path: Path) -> dict[str, Any]:
    """What the report names of a store: its key, dataset, model spec (checkpoint, whether the
    weights were pretrained) and test size in images and patients/groups."""
    store = open_store(path)
    groups = store.groups("test") if "test" in store.splits else None
    return {
        "path": str(path),
        "key": store.key,
        "dataset": store.dataset_name,
        "model": store.spec.get("model", {}),
        "test_images": store.n_rows.get("test"),
        "test_groups": None if groups is None else len(set(groups.tolist())),
    }


def supports_record(supports: SupportSets) -> dict[str, list[str]]:
    """supports.json: the support ids of every (dataset, budget, seed)."""
    return {
        f"{dataset}|{budget.label}|seed{seed}": ids.tolist()
        for (dataset, budget, seed), ids in supports.items()
    }
