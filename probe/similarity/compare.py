"""`similarity`: every pair of entries (model:pooling) of each dataset compared on the same
images, straight from the cached stores; no model and no GPU.

Rows are matched by image id, never by position: two stores of a dataset may hold their rows in
any order, and stores whose id sets differ (a `--limit` trial, images skipped under
`--on-error skip`) are refused unless the shared ids are asked for. A row cap takes one seeded
sample of the shared ids per dataset, the same for every pair.
"""

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import groupby
from pathlib import Path

import numpy as np
import pandas as pd

from medprobe.cache import Store, ToolkitError, open_store, resolve_cache_root
from medprobe.cache.files.atomic import check_folder_target
from medprobe.probe import arguments
from medprobe.probe.guards import refuse_past_memory
from medprobe.probe.similarity.bootstrap import bootstrap_similarities
from medprobe.probe.similarity.measures import (
    METRICS,
    MIN_ROWS,
    pairwise_similarities,
    prepare_entry,
)
from medprobe.probe.similarity.report import (
    COLUMNS,
    INTERVAL_COLUMNS,
    SETTINGS_FILE,
    SimilarityResults,
)
from medprobe.probe.stats.bootstrap import resample_counts
from medprobe.probe.targets import ProbeTarget, select_targets

logger = logging.getLogger(__name__)

SPLIT_CHOICES = ("all", "train", "val", "test")
MISMATCH_CHOICES = ("error", "intersect")
MIN_BOOTSTRAP = 20  # fewer replicates cannot place a 2.5th percentile
MAX_BOOTSTRAP = 100_000  # a typo's guard, checked before any work


@dataclass(frozen=True)
class SimilaritySettings:
    """The checked arguments of `similarity` (max_rows None: every shared row)."""

    metrics: tuple[str, ...]
    split: str
    max_rows: int | None
    seed: int
    knn_k: int
    on_mismatch: str
    bootstrap: int


def check_settings(
    *,
    metrics: str | Sequence[str],
    split: str,
    max_rows: int | str | None,
    seed: int,
    knn_k: int,
    on_mismatch: str,
    bootstrap: int,
) -> SimilaritySettings:
    """Every argument checked before any store is read; errors name the argument."""
    chosen = list(arguments.names("metrics", metrics) or [])
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise ToolkitError(
            f"metrics={chosen}: "
            + (f"unknown {unknown}; " if unknown else "name at least one; ")
            + f"choose from {', '.join(METRICS)}",
            argument="metrics",
        )
    if split not in SPLIT_CHOICES:
        raise ToolkitError(
            f"split={split!r}: choose one of {', '.join(SPLIT_CHOICES)}", argument="split"
        )
    if on_mismatch not in MISMATCH_CHOICES:
        raise ToolkitError(
            f"on_mismatch={on_mismatch!r}: choose 'error' (stop when stores of a dataset hold "
            "different images) or 'intersect' (compare on the ids they share)",
            argument="on_mismatch",
        )
    if isinstance(max_rows, str):  # as the CLI passes it: a number or 'all'
        text = max_rows.strip().lower()
        if text == "all":
            max_rows = None
        elif text.isdigit():
            max_rows = int(text)
        else:
            raise ToolkitError(
                f"max_rows={max_rows!r}: expected a whole number or 'all'", argument="max_rows"
            )
    if max_rows is not None:
        max_rows = arguments.whole(
            "max_rows", max_rows, MIN_ROWS, "debiased CKA needs 4 images; None uses every row"
        )
    bootstrap = arguments.whole("bootstrap", bootstrap, 0, "0 turns intervals off", MAX_BOOTSTRAP)
    if 0 < bootstrap < MIN_BOOTSTRAP:
        raise ToolkitError(
            f"bootstrap={bootstrap}: too few replicates for a 95 % interval; use 0 (no "
            f"intervals) or at least {MIN_BOOTSTRAP} (1000 for stable tails)",
            argument="bootstrap",
        )
    return SimilaritySettings(
        metrics=tuple(chosen),
        split=split,
        max_rows=max_rows,
        seed=arguments.whole("seed", seed, 0, "a seed for np.random.default_rng"),
        knn_k=arguments.whole("knn_k", knn_k, 1, "each image needs a neighbour"),
        on_mismatch=on_mismatch,
        bootstrap=bootstrap,
    )


def similarity(
    cache_dir: str | Path | None = None,
    *,
    datasets: str | Sequence[str] | None = None,
    models: str | Sequence[str] | None = None,
    poolings: str | Sequence[str] | None = None,
    metrics: str | Sequence[str] = METRICS,
    split: str = "all",
    max_rows: int | str | None = 10_000,
    seed: int = 0,
    knn_k: int = 10,
    on_mismatch: str = "error",
    bootstrap: int = 0,
    include_trials: bool = False,
    out: str | Path | None = None,
    overwrite: bool = False,
) -> SimilarityResults:
    """Compare every pair of entries (model:pooling, each with itself too) of each dataset's
    complete stores under `cache_dir` on the images they share, by each metric.

    metrics: from "cka", "cka_debiased", "mutual_knn"; split: "all" or one split; max_rows: a
    seeded sample of that many shared ids (None or "all": every row); knn_k: neighbours for
    mutual k-NN; on_mismatch: "error" or "intersect" when stores of a dataset hold different ids;
    bootstrap: replicates over images for 95 % percentile intervals (0: none);
    include_trials: also compare trial stores (`extract run --limit`); out: also save the
    results there (checked before any work; an existing folder only with overwrite=True).
    """
    settings = check_settings(
        metrics=metrics,
        split=split,
        max_rows=max_rows,
        seed=seed,
        knn_k=knn_k,
        on_mismatch=on_mismatch,
        bootstrap=bootstrap,
    )
    root = resolve_cache_root(cache_dir)
    if out is not None:
        check_folder_target(Path(out), overwrite=overwrite, protected=[root], marker=SETTINGS_FILE)
    targets = select_targets(
        root,
        models=arguments.names("models", models),
        datasets=arguments.names("datasets", datasets),
        poolings=arguments.names("poolings", poolings),
        include_trials=include_trials,
        require_comparable=False,
    )
    rows: list[dict] = []
    infos = {}
    for dataset, group in groupby(targets, key=lambda t: t.dataset):
        dataset_rows, infos[dataset] = compare_dataset(dataset, list(group), settings)
        rows += dataset_rows
    columns = COLUMNS + (INTERVAL_COLUMNS if settings.bootstrap else [])
    results = SimilarityResults(
        frame=pd.DataFrame(rows, columns=columns), settings=asdict(settings), datasets=infos
    )
    if out is not None:
        results.save(
            out, overwrite=overwrite, protected=[root, *(t.path for t in targets)], argument="out"
        )
    return results


def compare_dataset(
    dataset: str, targets: list[ProbeTarget], settings: SimilaritySettings
) -> tuple[list[dict], dict]:
    """Tidy rows for every pair of `targets` (all of one dataset), and how its rows were chosen."""
    stores = {t.path: open_store(t.path) for t in targets}
    names = {t.path: t.model for t in targets}
    ids = {path: _split_ids(store, settings.split) for path, store in stores.items()}
    shared = _shared_ids(dataset, ids, names, settings)
    rng = np.random.default_rng(_dataset_seed(dataset, settings.seed))
    chosen = shared
    if settings.max_rows is not None and len(shared) > settings.max_rows:
        chosen = np.sort(shared[rng.choice(len(shared), settings.max_rows, replace=False)])
    n_rows = len(chosen)
    if n_rows < MIN_ROWS:
        raise ToolkitError(
            f"{dataset}: the stores share {n_rows} image ids in split {settings.split!r}; "
            f"similarity needs at least {MIN_ROWS}"
        )
    if "mutual_knn" in settings.metrics and settings.knn_k > n_rows - 2:
        raise ToolkitError(
            f"knn_k={settings.knn_k}: {dataset} has {n_rows} images to compare, so an image has "
            f"{n_rows - 1} others; lower knn_k below {n_rows - 1}",
            argument="knn_k",
        )
    entries = [f"{t.model}:{t.pooling}" for t in targets]
    if settings.bootstrap:
        # (B, n) counts and weights, and (B, S, S) replicates per metric with their temporaries
        refuse_past_memory(
            settings.bootstrap * (12 * n_rows + 24 * len(entries) ** 2 * len(settings.metrics)),
            argument="bootstrap",
            value=settings.bootstrap,
            what=f"the bootstrap ({settings.bootstrap:,} replicates of {n_rows:,} images of "
            f"{dataset}, {len(entries)} entries)",
            fix="lower max_rows, or pass bootstrap=0",
        )
    positions = {path: _positions(ids[path], chosen) for path in stores}
    logger.info("%s: %d entries on %d images", dataset, len(entries), n_rows)
    prepared = []
    for target in targets:
        embeddings = _embeddings(stores[target.path], settings.split, target.pooling)
        embeddings = embeddings[positions[target.path]]
        n_bad = int((~np.isfinite(embeddings)).any(axis=1).sum())
        if n_bad:
            raise ToolkitError(
                f"{target.path.name} ({target.pooling}) has {n_bad} rows with NaN or Inf among "
                f"the images compared; check it with `cache verify {target.path}`"
            )
        prepared.append(prepare_entry(embeddings, settings.metrics, settings.knn_k))
        del embeddings
    matrices = pairwise_similarities(prepared, settings.metrics)
    intervals = {}
    if settings.bootstrap:
        counts = resample_counts(n_rows, settings.bootstrap, seed=int(rng.integers(2**63)))
        replicates = bootstrap_similarities(prepared, settings.metrics, counts)
        # Percentile intervals (2.5th and 97.5th), for every pair at once.
        intervals = {m: np.nanpercentile(r, [2.5, 97.5], axis=0) for m, r in replicates.items()}
    rows = []
    for i, a in enumerate(entries):
        for j in range(i, len(entries)):
            for metric in settings.metrics:
                row = {
                    "dataset": dataset,
                    "a": a,
                    "b": entries[j],
                    "metric": metric,
                    "value": float(matrices[metric][i, j]),
                    "n_rows": n_rows,
                }
                if settings.bootstrap:
                    row["ci_low"] = float(intervals[metric][0, i, j])
                    row["ci_high"] = float(intervals[metric][1, i, j])
                rows.append(row)
    info = {
        "entries": entries,
        "stores": [
            {"path": str(path), "model": names[path], "key": store.key}
            for path, store in stores.items()
        ],
        "ids_per_store": {names[path]: len(ids[path]) for path in stores},
        "n_shared": len(shared),
        "n_rows": n_rows,
    }
    return rows, info


def _dataset_seed(dataset: str, seed: int) -> int:
    """A stable seed per (dataset, seed): a dataset's sample does not depend on the others."""
    digest = hashlib.sha256(f"similarity|{dataset}|{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _split_ids(store: Store, split: str) -> np.ndarray:
    """(N,) str ids of `split`, or of every split in the store's order for 'all'."""
    if split == "all":
        return np.concatenate([store.ids(s).astype(str) for s in store.splits])
    if split not in store.splits:
        raise ToolkitError(
            f"split={split!r}: store {store.path.name} has no {split} split (it has "
            f"{', '.join(store.splits)}); choose one of those or 'all'",
            argument="split",
        )
    return store.ids(split).astype(str)


def _embeddings(store: Store, split: str, pooling: str) -> np.ndarray:
    """(N, D) embeddings as stored (float16 or float32), rows in `_split_ids` order."""
    splits = store.splits if split == "all" else (split,)
    parts = [store.embeddings(s, pooling, dtype=None) for s in splits]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _shared_ids(
    dataset: str,
    ids: dict[Path, np.ndarray],
    names: dict[Path, str],
    settings: SimilaritySettings,
) -> np.ndarray:
    """Sorted ids present in every store; a difference is an error unless on_mismatch says
    'intersect', and the error counts what each side lacks."""
    paths = list(ids)
    reference = paths[0]
    reference_set = set(ids[reference])
    problems = []
    for path in paths[1:]:
        other = set(ids[path])
        if other == reference_set:
            continue
        problems.append(
            f"{names[path]} lacks {len(reference_set - other):,} of {names[reference]}'s "
            f"{len(reference_set):,} ids and {names[reference]} lacks "
            f"{len(other - reference_set):,} of {names[path]}'s {len(other):,}"
        )
    shared = np.array(sorted(set.intersection(*(set(v) for v in ids.values()))), dtype=str)
    if problems and settings.on_mismatch == "error":
        raise ToolkitError(
            f"on_mismatch='error': the stores of {dataset} hold different images in split "
            f"{settings.split!r}: {'; '.join(problems)} (a --limit trial, or images skipped "
            f"under --on-error skip?). Compare on the {len(shared):,} ids they share with "
            "on_mismatch='intersect', or pick matching stores with models",
            argument="on_mismatch",
        )
    if problems:
        logger.warning(
            "%s: stores hold different images; comparing on the %d ids all %d share (%s)",
            dataset,
            len(shared),
            len(paths),
            "; ".join(problems),
        )
    return shared


def _positions(store_ids: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """(n,) int64 rows of `store_ids` holding each of `chosen`, in `chosen`'s order."""
    order = np.argsort(store_ids, kind="stable")
    return order[np.searchsorted(store_ids, chosen, sorter=order)]
