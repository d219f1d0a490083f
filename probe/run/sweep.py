"""The sweep: every (store, pooling) x budget x seed x probe, as tidy result rows.

Support sets are drawn once per (dataset, budget, seed) from the first store of each dataset
(all stores of a dataset hold the same ids, checked in `probe.targets`) and looked up by id in every
store, so each model is scored on exactly the same labelled images.
"""

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from joblib import Parallel, cpu_count, delayed

from medprobe.cache import open_store
from medprobe.probe.blas import one_blas_thread
from medprobe.probe.budgets import Budget
from medprobe.probe.fit.backends import (
    EstimatorBackend,
    ProbeInputs,
    TorchBackend,
    resolve_backend,
)
from medprobe.probe.fit.retrieval import retrieval_per_query
from medprobe.probe.run.breakdown import (
    groupings_of,
    needs_val_scores,
    subgroup_cell,
    thresholds_on_val,
    units_of,
)
from medprobe.probe.run.settings import ProbeSettings
from medprobe.probe.run.supports import SupportSets
from medprobe.probe.stats.calibration import ReliabilityBins
from medprobe.probe.stats.retrieval import retrieval_metrics
from medprobe.probe.stats.scoring import score_cell, shared_test_resamples
from medprobe.probe.targets import (
    ProbeTarget,
    SplitArrays,
    StoreTokens,
    read_split,
    refuse_without_tokens,
    task_of,
)

logger = logging.getLogger(__name__)

# (method, budget label, seed): one probe of a target
Cell = tuple[str, str, int]
SCORING_THREADS = 4


def scoring_threads(workers: int = 1) -> int:
    """Cells of a budget one process scores at once (each holds up to ~128 MB: `guards`): its torch
    threads, at most SCORING_THREADS (loky gives each of `workers` cpu_count // workers)."""
    import torch

    threads = torch.get_num_threads() if workers == 1 else max(1, cpu_count() // workers)
    return min(SCORING_THREADS, threads)


@dataclass
class TargetOutcome:
    """What one (store, pooling) gave, per cell: tidy metric rows, each metric on every test
    resample, reliability bins, and the test scores of full budgets (all cells when asked);
    and how each logistic-regression fit stopped (`fit_reports`, see `probe_target`).

    scores: (n_test, K) float32 class probabilities, or (n_test, L) positive-class
    probabilities for multi-label (NaN for a label no support set could train), rows in
    `test_ids` order. resampled: metric -> (B,) float32, empty without a bootstrap.
    """

    target: ProbeTarget
    rows: list[dict[str, Any]]
    test_ids: np.ndarray
    scores: dict[Cell, np.ndarray] = field(default_factory=dict)
    resampled: dict[Cell, dict[str, np.ndarray]] = field(default_factory=dict)
    reliability: dict[Cell, ReliabilityBins] = field(default_factory=dict)
    fit_reports: list[dict[str, Any]] = field(default_factory=list)
    # per cell, one GroupScores per `subgroups` attribute (see probe.run.breakdown)
    subgroups: dict[Cell, list[Any]] = field(default_factory=dict)
    # under `aggregate`: unit, pool, n_units, n_images of the test split
    units: dict[str, Any] | None = None


def run_sweep(
    targets: Sequence[ProbeTarget],
    supports: SupportSets,
    settings: ProbeSettings,
    *,
    on_target_done: Callable[[ProbeTarget], None] | None = None,
    on_fit_reports: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[TargetOutcome]:
    """Probe every target, in `targets` order.

    Targets fan out over `settings.jobs` joblib workers (inside `joblib.parallel_config(backend=
    "dask")` they run on a Dask cluster); within a target, fits are batched by the backend.
    Each target's logistic-regression fit reports (see `probe_target`) go to `on_fit_reports`,
    and every fit that used up its iterations is logged as a warning here, in the calling
    process.
    """
    if "attentive" in settings.methods:
        refuse_without_tokens(targets)
    tasks = [
        delayed(probe_target)(
            t,
            {k: v for k, v in supports.items() if k[0] == t.dataset},
            settings,
        )
        for t in targets
    ]
    outcomes: list[TargetOutcome] = []
    with warnings.catch_warnings():
        # loky replaces a worker whose memory grew by > 300 MB (a CheXpert-sized split does)
        # and says "memory leak"; the task is not lost and nothing leaks.
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given")
        for outcome in Parallel(n_jobs=settings.jobs, return_as="generator")(tasks):
            outcomes.append(outcome)
            for report in outcome.fit_reports:
                if not report["converged"]:
                    _warn_unconverged(report)
            if on_fit_reports is not None:
                on_fit_reports(outcome.fit_reports)
            if on_target_done is not None:
                on_target_done(outcome.target)
    return outcomes


def _warn_unconverged(report: dict[str, Any]) -> None:
    label = f" / label {report['label']}" if report["label"] is not None else ""
    logger.warning(
        "logistic regression did not converge for %s / %s / pooling %s / %s / seed %s%s: it "
        "used up max_iter=%d iterations with the largest gradient entry still %.1e; its scores "
        "are those of the last iterate",
        report["dataset"],
        report["model"],
        report["pooling"],
        report["budget"],
        report["seed"],
        label,
        report["iterations"],
        report["max_gradient"],
    )


@dataclass(frozen=True)
class _Step:
    """One (store, pooling, budget): its splits and the support rows of each seed."""

    train: SplitArrays
    test: SplitArrays
    val: SplitArrays | None
    support_rows: list[np.ndarray]
    seeds: list[int]
    budget: Budget
    task: dict[str, Any]
    tokens: StoreTokens | None = None


# (method, seed, test scores) for every probe of a step.
Scored = list[tuple[str, int, np.ndarray]]


def probe_target(
    target: ProbeTarget, supports: SupportSets, settings: ProbeSettings
) -> TargetOutcome:
    """All budgets, seeds and methods for one (store, pooling).

    Its `fit_reports` hold one dict per final logistic-regression fit: dataset, model, pooling,
    budget, seed, label (a multi-label store's label name, else None), c, iterations,
    max_gradient, stop ('gradient' | 'no progress' | 'line search' | 'max_iter': not
    converged), converged, selection_unconverged (fits made to choose C that used up max_iter).
    """
    store = open_store(target.path)
    task = task_of(store)
    train = read_split(store, "train", target.pooling)
    test = read_split(store, "test", target.pooling)
    val = read_split(store, "val", target.pooling) if "val" in store.splits else None
    row_of = {image_id: row for row, image_id in enumerate(train.ids)}
    backend = resolve_backend(settings.backend)
    # Under `aggregate` the test set is scored per unit (study or patient), else per image.
    units = units_of(store, settings.aggregate)
    scored_ids, scored_labels, groups = test.ids, test.labels, store.groups("test")
    if units is not None:
        scored_ids, scored_labels = units.ids, units.labels(test.labels, task["kind"])
        groups = None if groups is None else groups[units.first]
    groupings = groupings_of(store, settings.subgroups, units)
    # TPR and FPR need a threshold chosen on val: the probes then also score the val split.
    with_val = needs_val_scores(task, groupings, val is not None)
    predicted = test
    if with_val:
        predicted = SplitArrays(
            np.concatenate([test.ids, val.ids]),
            np.concatenate([test.embeddings, val.embeddings]),
            np.concatenate([test.labels, val.labels]),
        )
    counts = image_counts = None
    if settings.bootstrap:
        counts = shared_test_resamples(target.dataset, scored_ids, groups, settings.bootstrap)
        image_counts = counts  # retrieval scores images, also when the others score units
        if units is not None:
            image_groups = store.groups("test")
            image_counts = shared_test_resamples(
                target.dataset, test.ids, image_groups, settings.bootstrap
            )
    outcome = TargetOutcome(target, [], test.ids)
    if units is not None:
        unit, pool = settings.aggregate.split(":")
        outcome.units = dict(unit=unit, pool=pool, n_units=len(units), n_images=len(test.ids))

    def score_test(cell: tuple[str, int, np.ndarray]) -> tuple[Any, ...]:
        """(method, seed, scores) of a cell, its test scores then val's -> (method, seed, scores,
        its `CellScore`, its subgroups or None)."""
        scores, val_scores = cell[2][: len(test.ids)], cell[2][len(test.ids) :]
        if units is not None:
            scores = units.scores(scores, task["kind"])
        subgroups = None
        if groupings:
            val_part = (val.labels, val_scores) if with_val else (None, None)
            thresholds = thresholds_on_val(task, *val_part)
            subgroups = subgroup_cell(scored_labels, scores, task, groupings, counts, thresholds)
        return *cell, score_cell(scored_labels, scores, task, counts), subgroups

    for budget in settings.budgets:
        seeds = settings.seeds_for(budget)
        support_rows = [
            np.array([row_of[i] for i in supports[(target.dataset, budget, s)]]) for s in seeds
        ]
        tokens = None
        if "attentive" in settings.methods:  # the probes' "test" rows are test, then val's
            tokens = StoreTokens(store, val_after_test=len(test.ids) if with_val else None)
        step = _Step(train, predicted, val, support_rows, seeds, budget, task, tokens)
        score = _multilabel if task["kind"] == "multilabel" else _single_label
        scored_cells = score(backend, step, settings)
        for report in backend.fit_reports:
            label = None if report.label is None else task["label_names"][report.label]
            outcome.fit_reports.append(
                {
                    "dataset": target.dataset,
                    "model": target.model,
                    "pooling": target.pooling,
                    "budget": budget.label,
                    **asdict(report),
                    "label": label,
                    "converged": report.converged,
                }
            )
        backend.fit_reports.clear()
        if "retrieval" in settings.methods:
            # each seed's support set (the train split at full budget) is the gallery, in row
            # order (the tie rule's "lower row"); the whole split is read in place, not copied
            per_query = []
            for rows in support_rows:
                rows = np.sort(rows)
                whole = len(rows) == len(train.labels) and rows[-1] == len(rows) - 1
                per_query.append(
                    retrieval_per_query(
                        train.embeddings if whole else train.embeddings[rows],
                        train.labels if whole else train.labels[rows],
                        test.embeddings,
                        test.labels,
                    )
                )
            scored_seeds = zip(seeds, retrieval_metrics(per_query, image_counts), strict=True)
            for seed, (metrics, resampled) in scored_seeds:
                if resampled is not None:
                    outcome.resampled[("retrieval", budget.label, seed)] = resampled
                for metric, value in metrics.items():
                    outcome.rows.append(_row(target, budget, "retrieval", seed, metric, value))
        # scoring is numpy and scipy on one core each, the GIL released in their loops: the
        # cells of a budget are scored on torch's intra-op threads at once (1.9x on two cores),
        # one BLAS thread each, the limit held here (`probe.blas`)
        with one_blas_thread(), ThreadPoolExecutor(scoring_threads()) as threads:
            scorings = list(threads.map(score_test, scored_cells))
        for method, seed, all_scores, scored, subgroups in scorings:
            cell = (method, budget.label, seed)
            # full budgets keep their scores for DeLong's paired test
            if settings.save_predictions or budget.kind == "full":
                outcome.scores[cell] = all_scores[: len(test.ids)].astype(np.float32)
            if subgroups is not None:
                outcome.subgroups[cell] = subgroups
            if scored.resampled is not None:
                outcome.resampled[cell] = scored.resampled
            outcome.reliability[cell] = scored.reliability
            # The headline metric leads: results.csv, summary.csv and every table keep this order.
            ordered = sorted(
                scored.metrics.items(), key=lambda item: item[0] != task["headline_metric"]
            )
            for metric, value in ordered:
                outcome.rows.append(_row(target, budget, method, seed, metric, value))
    return outcome


def _row(
    target: ProbeTarget, budget: Budget, method: str, seed: int, metric: str, value: float
) -> dict[str, Any]:
    """One tidy row of results.csv."""
    return {
        "dataset": target.dataset,
        "model": target.model,
        "pooling": target.pooling,
        "method": method,
        "budget": budget.label,
        "budget_kind": budget.kind,
        "budget_value": budget.value,
        "seed": seed,
        "metric": metric,
        "value": value,
    }


def _n_classes(task: dict[str, Any], *label_arrays: np.ndarray) -> int:
    present = max(int(labels.max()) for labels in label_arrays if len(labels)) + 1
    return max(len(task["label_names"]), present)


def _method_scores(
    backend: TorchBackend | EstimatorBackend, inputs: ProbeInputs, settings: ProbeSettings
) -> Iterator[tuple[str, list[np.ndarray]]]:
    """(method name, class probabilities per seed) for each requested probe."""
    if "logreg" in settings.methods:
        yield "logreg", backend.logreg(inputs)
    if "knn" in settings.methods:
        for k in settings.knn_k:
            name = "knn" if len(settings.knn_k) == 1 else f"knn-k{k}"
            yield name, backend.knn(inputs, k=k, vote=settings.knn_vote)
    if "prototype" in settings.methods:
        yield "prototype", backend.prototype(inputs)
    if "attentive" in settings.methods:
        yield "attentive", backend.attentive(inputs)


def _single_label(
    backend: TorchBackend | EstimatorBackend, step: _Step, settings: ProbeSettings
) -> Scored:
    train, test, val = step.train, step.test, step.val
    n_classes = _n_classes(step.task, train.labels, test.labels)
    inputs = ProbeInputs(
        train=train.embeddings,
        train_labels=train.labels,
        supports=step.support_rows,
        seeds=step.seeds,
        test=test.embeddings,
        n_classes=n_classes,
        val=None if val is None else val.embeddings,
        val_labels=None if val is None else val.labels,
        use_val=step.budget.kind == "full",
        tokens=step.tokens,
    )
    return [
        (method, seed, scores)
        for method, per_seed in _method_scores(backend, inputs, settings)
        for seed, scores in zip(step.seeds, per_seed, strict=True)
    ]


def _multilabel(
    backend: TorchBackend | EstimatorBackend, step: _Step, settings: ProbeSettings
) -> Scored:
    """One binary probe per label, on the support rows where that label is known, every label
    of the store in one call per method (the labels share every pass over the rows)."""
    train, test, val, seeds = step.train, step.test, step.val, step.seeds
    n_labels = train.labels.shape[1]
    trainable = [
        column
        for column in range(n_labels)
        if all(
            len(np.unique(train.labels[rows[train.labels[rows, column] >= 0], column])) == 2
            for rows in step.support_rows
        )
    ]  # a support set without both outcomes of a label cannot train it
    if not trainable:
        return []
    inputs = ProbeInputs(
        train=train.embeddings,
        train_labels=train.labels[:, trainable],
        supports=step.support_rows,
        seeds=seeds,
        test=test.embeddings,
        n_classes=2,
        val=None if val is None else val.embeddings,
        val_labels=None if val is None else val.labels[:, trainable],
        use_val=step.budget.kind == "full",
        tokens=step.tokens,
    )
    scored: Scored = []
    for method, per_seed in _method_scores(backend, inputs, settings):
        if method == "logreg":  # the store's column, not the column of `inputs`
            backend.fit_reports[:] = [
                replace(report, label=trainable[report.label]) for report in backend.fit_reports
            ]
        for seed, scores in zip(seeds, per_seed, strict=True):
            # NaN marks labels no support set could train; metrics leave them out.
            positive = np.full((len(test.ids), n_labels), np.nan)
            positive[:, trainable] = scores
            scored.append((method, seed, positive))
    return scored
