"""A probe run's settings: one frozen object, built and checked once, before any store is read,
from `probe run`'s flags or `mp.probe(...)`'s keywords, and handed down whole.

Each field is the keyword a user writes (`mp.probe(shots="1,5", knn_k=[10, 20])`) and, with
dashes, the CLI flag (`--shots 1,5 --knn-k 10,20`); both accept the same values and give the
same errors, which name the argument. Adding an option touches this class, the CLI flag and the
code that reads it.
"""

import inspect
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from medprobe.cache.errors import ToolkitError
from medprobe.probe import arguments
from medprobe.probe.budgets import Budget, make_budgets
from medprobe.probe.fit.backends import BACKENDS
from medprobe.probe.fit.neighbors import KNN_KS
from medprobe.probe.run.cluster import parse_cluster
from medprobe.probe.stats.bootstrap import DEFAULT_RESAMPLES, MIN_RESAMPLES
from medprobe.probe.stats.subgroups import parse_subgroups
from medprobe.probe.stats.units import parse_aggregate

DEFAULT_METHODS = ("logreg", "knn", "prototype")
# Opt-in: retrieval ranks the gallery for every test image; the attentive probe trains on every
# image's tokens (stores written with --tokens).
METHODS = (*DEFAULT_METHODS, "retrieval", "attentive")
KNN_VOTES = ("weighted", "majority")
# Guards against a typo that would run for days or fill the memory, checked before any work.
MAX_SEEDS = 10_000
MAX_RESAMPLES = 100_000
FLAGS = ("full", "include_trials", "allow_fewer", "save_predictions", "overwrite", "progress")


@dataclass(frozen=True, kw_only=True)
class ProbeSettings:
    """Everything a probe run is asked (saved in run.json's `config`).

    shots: labelled images per class ('1,5,10', 5 or [1, 5, 10]); fractions: of the train
    split; full: every training label as well. seeds: support sets drawn per sampled budget.
    models, datasets, poolings: only these (names, comma-separated or a list); include_trials:
    also trial stores (`extract run --limit`). methods: any of 'logreg', 'knn', 'prototype'
    (the default: all three), 'retrieval' (test images query the support set, or the train
    split at full budget: precision@1/5/10, mAP@R, majority@5/10) and 'attentive' (a
    cross-attention probe over stored tokens; stores written with --tokens only);
    knn_k: k for k-NN (one or more; capped by the support size); knn_vote: 'weighted' (DINO's
    temperature-weighted vote) or 'majority'. allow_fewer: a class with fewer training images
    than asked gives what it has. backend: 'auto' | 'torch' (batched, CUDA when present) |
    'sklearn' | 'cuml'. jobs: joblib workers over (store, pooling); cluster: 'local:N' or
    'tcp://HOST:PORT' runs them on Dask instead. bootstrap: test resamples per dataset (0: none)
    for intervals over test images and the paired full-budget tests. save_predictions keeps
    every probe's test scores (predictions.h5). cache_dir: the cache root (default:
    $MEDPROBE_CACHE_DIR, else ./embeddings); out: also save the results there (an existing
    folder only with overwrite=True). progress: a progress bar on the terminal.
    subgroups: metadata columns to break the test results down by ('sex,age:0,40,60,80': a
    numeric column binned at the edges given, else at its quartiles), giving subgroups.csv.
    aggregate: 'study' or 'patient' (':mean', the default, or ':max'): each unit's image
    probabilities are pooled before the test set is scored.
    """

    shots: tuple[int, ...] = ()
    fractions: tuple[float, ...] = ()
    full: bool = False
    seeds: int = 10
    models: tuple[str, ...] | None = None
    datasets: tuple[str, ...] | None = None
    poolings: tuple[str, ...] | None = None
    include_trials: bool = False
    methods: tuple[str, ...] = DEFAULT_METHODS
    knn_k: tuple[int, ...] = KNN_KS
    knn_vote: str = "weighted"
    allow_fewer: bool = False
    backend: str = "auto"
    jobs: int = 1
    cluster: str | None = None
    bootstrap: int = DEFAULT_RESAMPLES
    save_predictions: bool = False
    cache_dir: Path | None = None
    out: Path | None = None
    overwrite: bool = False
    progress: bool = True
    subgroups: tuple[str, ...] = ()
    aggregate: str | None = None

    def __post_init__(self) -> None:
        """Normalise every field to its one form and check it; errors name the argument."""
        set_ = object.__setattr__  # frozen: the normalised values are set once, here
        set_(self, "shots", arguments.numbers("shots", self.shots, int, "1,5,10"))
        set_(self, "fractions", arguments.numbers("fractions", self.fractions, float, "0.01,0.1"))
        for name in FLAGS:
            set_(self, name, arguments.flag(name, getattr(self, name)))
        for name in ("models", "datasets", "poolings"):
            set_(self, name, arguments.names(name, getattr(self, name)))
        seeds = arguments.whole("seeds", self.seeds, 1, "support sets per budget", MAX_SEEDS)
        set_(self, "seeds", seeds)
        methods = arguments.names("methods", self.methods) or ()
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ToolkitError(
                f"methods={list(methods)}: choose one or more of {list(METHODS)}",
                argument="methods",
            )
        set_(self, "methods", methods)
        knn_k = arguments.numbers("knn_k", self.knn_k, int, "10,20")
        if not knn_k or any(k < 1 for k in knn_k):
            raise ToolkitError(f"knn_k={list(knn_k)}: every k must be at least 1", argument="knn_k")
        repeated = sorted({k for k in knn_k if knn_k.count(k) > 1})
        if repeated:
            raise ToolkitError(
                f"knn_k={list(knn_k)}: {repeated} given more than once (each k is one probe; a "
                "repeat would count its rows twice in the summary)",
                argument="knn_k",
            )
        set_(self, "knn_k", knn_k)
        arguments.choice("knn_vote", self.knn_vote, KNN_VOTES)
        arguments.choice("backend", self.backend, BACKENDS)
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs == 0:
            raise ToolkitError(
                f"jobs={self.jobs!r}: the number of parallel workers, at least 1 (-1: every core)",
                argument="jobs",
            )
        if self.cluster is not None:
            parse_cluster(self.cluster)
        bootstrap = arguments.whole(
            "bootstrap", self.bootstrap, 0, "test resamples; 0 turns them off", MAX_RESAMPLES
        )
        if 0 < bootstrap < MIN_RESAMPLES:
            raise ToolkitError(
                f"bootstrap={bootstrap}: use 0 (no test bootstrap) or at least "
                f"{MIN_RESAMPLES} resamples, enough for the 2.5th and 97.5th percentiles",
                argument="bootstrap",
            )
        set_(self, "cache_dir", arguments.folder("cache_dir", self.cache_dir))
        set_(self, "out", arguments.folder("out", self.out))
        set_(self, "subgroups", tuple(spec.text for spec in parse_subgroups(self.subgroups)))
        set_(self, "aggregate", parse_aggregate(self.aggregate))
        self.budgets  # noqa: B018 (the budgets are checked now, not at first use)

    @cached_property
    def budgets(self) -> tuple[Budget, ...]:
        """The label budgets, sorted and deduplicated."""
        return tuple(make_budgets(self.shots, self.fractions, self.full))

    def seeds_for(self, budget: Budget) -> list[int]:
        return list(range(self.seeds)) if budget.random else [0]

    def record(self) -> dict[str, Any]:
        """run.json's `config`: every field as JSON, budgets by label."""
        record: dict[str, Any] = {"budgets": [b.label for b in self.budgets]}
        for field in fields(self):
            value = getattr(self, field.name)
            record[field.name] = str(value) if isinstance(value, Path) else value
        return record


def keyword_signature() -> inspect.Signature:
    """`mp.probe`'s signature: cache_dir first (positional too), then every setting by keyword."""
    parameters = [
        inspect.Parameter("cache_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
        *(
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
            for f in fields(ProbeSettings)
            if f.name != "cache_dir"
        ),
    ]
    return inspect.Signature(parameters, return_annotation="Results")
