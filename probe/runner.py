"""`mp.probe(...)`: the whole probe run as one library call (`probe run` is a thin layer over it).

Arguments are checked before any store is read; support sets are drawn once per (dataset,
budget, seed) by image id and shared by every model; the (store, pooling) tasks fan out over
joblib workers or a Dask cluster; the outcome is a `Results` that `.save(folder)` publishes.
"""

import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medprobe.cache import open_store
from medprobe.cache.atomic import check_folder_target
from medprobe.cache.root import resolve_cache_root
from medprobe.probe.bootstrap import DEFAULT_RESAMPLES
from medprobe.probe.budgets import make_budgets
from medprobe.probe.cluster import parallel_backend, parse_cluster
from medprobe.probe.data import ProbeTarget, select_targets, task_of
from medprobe.probe.neighbors import KNN_KS
from medprobe.probe.predictions import DatasetPredictions, Predictions
from medprobe.probe.report import headline_of
from medprobe.probe.results import Results
from medprobe.probe.stats import Resampled, paired_differences, summarise
from medprobe.probe.sweep import (
    METHODS,
    SupportSets,
    SweepConfig,
    TargetOutcome,
    draw_supports,
    run_sweep,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
VERSIONED = ("medprobe", "numpy", "scikit-learn", "torch", "pandas", "joblib")


def _as_tuple(value: T | Sequence[T] | None) -> tuple[T, ...]:
    """A single value or a sequence, as a tuple (a string is one value, not its letters)."""
    if value is None:
        return ()
    if isinstance(value, (str, int, float)):
        return (value,)  # type: ignore[return-value]
    return tuple(value)


def probe(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    shots: int | Sequence[int] | None = None,
    fractions: float | Sequence[float] | None = None,
    full: bool = False,
    seeds: int = 10,
    models: str | Sequence[str] | None = None,
    datasets: str | Sequence[str] | None = None,
    poolings: str | Sequence[str] | None = None,
    methods: str | Sequence[str] = METHODS,
    knn_k: int | Sequence[int] = KNN_KS,
    knn_vote: str = "weighted",
    backend: str = "auto",
    jobs: int = 1,
    cluster: str | None = None,
    allow_fewer: bool = False,
    include_trials: bool = False,
    bootstrap: int = DEFAULT_RESAMPLES,
    save_predictions: bool = False,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Results:
    """Probe every complete store under the cache root (or the `models`, `datasets`,
    `poolings` named) at each label budget and seed.

    shots: k labelled images per class (e.g. [1, 5, 10]); fractions: of the train split;
    full: every training label. methods: 'logreg', 'knn', 'prototype'. backend: 'auto' |
    'torch' (batched, CUDA when present) | 'sklearn' | 'cuml'. jobs: joblib workers over
    (store, pooling); cluster: 'local:N' or 'tcp://HOST:PORT' runs them on Dask instead.
    include_trials: also probe trial stores (`extract run --limit`), left out by default.
    bootstrap: test resamples per dataset (0: none) for intervals over test images and the
    paired full-budget tests; the same resamples score every entry.
    save_predictions keeps every probe's test scores (`Results.predictions`, predictions.h5).
    out: also save the results there (checked before any work; an existing folder only with
    overwrite=True).
    """
    config = SweepConfig(
        budgets=tuple(make_budgets(_as_tuple(shots), _as_tuple(fractions), full)),
        seeds=seeds,
        methods=_as_tuple(methods),
        knn_ks=_as_tuple(knn_k),
        knn_vote=knn_vote,
        allow_fewer=allow_fewer,
        backend=backend,
        jobs=jobs,
        bootstrap=bootstrap,
    )
    cluster_spec = parse_cluster(cluster) if cluster is not None else None
    if out is not None:
        check_folder_target(Path(out), overwrite=overwrite)
    root = resolve_cache_root(cache_dir)
    targets = select_targets(
        root,
        models=_as_tuple(models) or None,
        datasets=_as_tuple(datasets) or None,
        poolings=_as_tuple(poolings) or None,
        include_trials=include_trials,
    )
    supports = draw_supports(targets, config)
    started = time.perf_counter()
    with (
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not progress,
        ) as bar,
        parallel_backend(cluster_spec) as cluster_jobs,
    ):
        task = bar.add_task("probing stores x poolings", total=len(targets))
        if cluster_jobs is not None:
            config = replace(config, jobs=cluster_jobs)
        outcomes = run_sweep(
            targets,
            supports,
            config,
            keep_scores=save_predictions,
            on_target_done=lambda _: bar.advance(task),
        )
    elapsed = time.perf_counter() - started
    results = assemble_results(
        targets, outcomes, supports, config, save_predictions=save_predictions
    )
    results.run.update(_run_record(targets, config, cluster, elapsed))
    if out is not None:
        results.save(out, overwrite=overwrite)
    return results


def assemble_results(
    targets: Sequence[ProbeTarget],
    outcomes: Sequence[TargetOutcome],
    supports: SupportSets,
    config: SweepConfig,
    *,
    save_predictions: bool,
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
    paired_tables = []
    for dataset, task in tasks.items():
        part = frame[frame["dataset"] == dataset]
        metric = headline_of(task, summary[summary["dataset"] == dataset])
        paired = paired_differences(part, metric, resampled, scores.datasets.get(dataset))
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
        run={
            "datasets": tasks,
            "logistic_regression_fits": _fit_record(outcomes),
            "resampled_by_group": {
                dataset: config.bootstrap > 0 and store.groups("test") is not None
                for dataset, store in sorted(first_store.items())
            },
        },
        supports=supports_record(supports),
        predictions=scores if save_predictions else None,
    )


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
    targets: Sequence[ProbeTarget], config: SweepConfig, cluster: str | None, seconds: float
) -> dict[str, Any]:
    """run.json beside the datasets' tasks: every setting, the stores and their keys, versions."""
    config_record = asdict(config)
    config_record["budgets"] = [b.label for b in config.budgets]
    config_record["cluster"] = cluster
    paths = sorted({t.path for t in targets})
    stores = [{"path": str(path), "key": open_store(path).key} for path in paths]
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    record = {
        "config": config_record,
        "stores": stores,
        "seconds": round(seconds, 2),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions,
        "python": platform.python_version(),
    }
    return json.loads(json.dumps(record))  # as run.json will hold it: lists, not tuples


def supports_record(supports: SupportSets) -> dict[str, list[str]]:
    """supports.json: the support ids of every (dataset, budget, seed)."""
    return {
        f"{dataset}|{budget.label}|seed{seed}": ids.tolist()
        for (dataset, budget, seed), ids in supports.items()
    }
