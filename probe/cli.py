"""`probe run | report | similarity`: few-shot and full-data probes over cached embeddings, and
how alike the models' embeddings of the same images are."""

import json
import platform
import time
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medprobe.cache import open_store
from medprobe.cache.console import run_app, table_console
from medprobe.cache.errors import ToolkitError
from medprobe.cache.root import CACHE_DIR_ENV, resolve_cache_root
from medprobe.probe.backends import BACKENDS
from medprobe.probe.budgets import parse_budgets
from medprobe.probe.data import select_targets, task_of
from medprobe.probe.report import RESULTS_FILE, RUN_FILE, build_report, print_report
from medprobe.probe.similarity import METRICS
from medprobe.probe.similarity_report import SimilarityResults
from medprobe.probe.similarity_run import SPLIT_CHOICES
from medprobe.probe.similarity_run import similarity as compare_representations
from medprobe.probe.sweep import METHODS, SweepConfig, draw_supports, run_sweep

app = typer.Typer(
    help="Probe cached embeddings across label budgets and seeds; compare models.",
    no_args_is_help=True,
    add_completion=False,
)


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ToolkitError(f"{flag} {text!r}: expected whole numbers, e.g. 10,20") from None


@app.command()
def run(
    shots: Annotated[str | None, typer.Option(help="shots per class, e.g. 1,5,10")] = None,
    fractions: Annotated[
        str | None, typer.Option(help="fractions of the train split, e.g. 0.01,0.1")
    ] = None,
    full: Annotated[bool, typer.Option(help="also probe with every training label")] = False,
    seeds: Annotated[int, typer.Option(help="support sets drawn per budget")] = 10,
    models: Annotated[str | None, typer.Option(help="only these models (comma-separated)")] = None,
    datasets: Annotated[str | None, typer.Option(help="only these datasets")] = None,
    poolings: Annotated[str | None, typer.Option(help="only these poolings, e.g. cls")] = None,
    methods: Annotated[str, typer.Option(help=f"probes: {','.join(METHODS)}")] = ",".join(METHODS),
    knn_k: Annotated[
        str, typer.Option(help="k for k-NN (list; capped by the support size)")
    ] = "20",
    knn_vote: Annotated[str, typer.Option(help="weighted (DINO, T=0.07) | majority")] = "weighted",
    backend: Annotated[
        str, typer.Option(help="auto | torch (batched, GPU if present) | sklearn | cuml")
    ] = "auto",
    jobs: Annotated[int, typer.Option(help="joblib workers over (store, pooling)")] = 1,
    allow_fewer: Annotated[
        bool,
        typer.Option(help="a class with fewer images than asked gives what it has (and says so)"),
    ] = False,
    cache_dir: Annotated[
        Path | None, typer.Option(help=f"cache root (env {CACHE_DIR_ENV}; default ./embeddings)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="results folder (default ./results/<timestamp>)")
    ] = None,
) -> None:
    """Fit logistic-regression, k-NN and prototype probes for every complete store, print the
    tables and write results.csv, supports.json, run.json, report.md and plots."""
    if backend not in BACKENDS:
        raise ToolkitError(f"--backend {backend!r}: choose one of {list(BACKENDS)}")
    config = SweepConfig(
        budgets=tuple(parse_budgets(shots, fractions, full)),
        seeds=seeds,
        methods=tuple(_names(methods) or ()),
        knn_ks=_ints(knn_k, "--knn-k"),
        knn_vote=knn_vote,
        allow_fewer=allow_fewer,
        backend=backend,
        jobs=jobs,
    )
    root = resolve_cache_root(cache_dir)
    targets = select_targets(
        root, models=_names(models), datasets=_names(datasets), poolings=_names(poolings)
    )
    supports = draw_supports(targets, config)
    started = time.perf_counter()
    console = table_console()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("probing stores x poolings", total=len(targets))
        rows = run_sweep(
            targets, supports, config, on_target_done=lambda target: progress.advance(bar)
        )
    elapsed = time.perf_counter() - started
    out_dir = out or Path("results") / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out_dir / RESULTS_FILE, index=False)
    (out_dir / "supports.json").write_text(
        json.dumps(
            {f"{d}|{b.label}|seed{s}": ids.tolist() for (d, b, s), ids in supports.items()},
            indent=0,
        )
    )
    stores = {t.path for t in targets}
    datasets_info = {}
    for path in sorted(stores):
        store = open_store(path)
        datasets_info.setdefault(store.dataset_name, task_of(store))
    config_dict = asdict(config)
    config_dict["budgets"] = [b.label for b in config.budgets]
    (out_dir / RUN_FILE).write_text(
        json.dumps(
            {
                "config": config_dict,
                "datasets": datasets_info,
                "stores": [{"path": str(p), "key": open_store(p).key} for p in sorted(stores)],
                "seconds": round(elapsed, 2),
                "finished_at": datetime.now(UTC).isoformat(),
                "versions": {
                    name: version(name)
                    for name in ("medprobe", "numpy", "scikit-learn", "torch", "pandas")
                },
                "python": platform.python_version(),
            },
            indent=1,
        )
    )
    report = build_report(out_dir)
    print_report(out_dir, console)
    console.print(f"{len(rows)} result rows in {elapsed:.1f} s -> {out_dir} (report: {report})")


@app.command()
def report(
    results_dir: Annotated[Path, typer.Argument(help="a folder written by `probe run`")],
) -> None:
    """Rebuild report.md, summary.csv, paired.csv and the plots of a results folder, and print
    the tables."""
    path = build_report(results_dir)
    print_report(results_dir, table_console())
    Console().print(f"report: {path}")


SIMILARITY_ROWS_SHOWN = 15


@app.command()
def similarity(
    datasets: Annotated[str | None, typer.Option(help="only these datasets")] = None,
    models: Annotated[str | None, typer.Option(help="only these models (comma-separated)")] = None,
    poolings: Annotated[str | None, typer.Option(help="only these poolings, e.g. cls")] = None,
    metrics: Annotated[str, typer.Option(help=f"any of {','.join(METRICS)}")] = ",".join(METRICS),
    split: Annotated[str, typer.Option(help=" | ".join(SPLIT_CHOICES))] = "all",
    max_rows: Annotated[
        str, typer.Option(help="a seeded sample of this many shared images, or 'all'")
    ] = "10000",
    seed: Annotated[int, typer.Option(help="seed of the row sample and the bootstrap")] = 0,
    knn_k: Annotated[int, typer.Option(help="neighbours per image for mutual k-NN")] = 10,
    on_mismatch: Annotated[
        str,
        typer.Option(
            help="stores of a dataset with different images: 'error' stops, 'intersect' "
            "compares on the ids they share"
        ),
    ] = "error",
    bootstrap: Annotated[
        int, typer.Option(help="replicates over images for 95% intervals (0: none)")
    ] = 0,
    cache_dir: Annotated[
        Path | None, typer.Option(help=f"cache root (env {CACHE_DIR_ENV}; default ./embeddings)")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="results folder (default ./results/similarity-<timestamp>)"),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing --out folder")] = False,
) -> None:
    """Compare every pair of models (model:pooling) of each dataset on the same images: linear
    CKA, debiased CKA, mutual k-NN alignment; writes similarity.csv, similarity.md and a heatmap
    per dataset and metric. Reads the stores only: no model, no GPU."""
    if max_rows.strip().lower() == "all":
        row_cap = None
    else:
        try:
            row_cap = int(max_rows)
        except ValueError:
            raise ToolkitError(
                f"max_rows={max_rows!r}: expected a whole number or 'all'", argument="max_rows"
            ) from None
    started = time.perf_counter()
    results = compare_representations(
        cache_dir,
        datasets=_names(datasets),
        models=_names(models),
        poolings=_names(poolings),
        metrics=_names(metrics) or [],
        split=split,
        max_rows=row_cap,
        seed=seed,
        knn_k=knn_k,
        on_mismatch=on_mismatch,
        bootstrap=bootstrap,
    )
    out_dir = out or Path("results") / datetime.now(UTC).strftime("similarity-%Y%m%d-%H%M%S")
    results.save(out_dir, overwrite=overwrite)
    console = table_console()
    _print_similarity(results, console)
    console.print(f"compared in {time.perf_counter() - started:.1f} s -> {out_dir}")


def _print_similarity(results: SimilarityResults, console: Console) -> None:
    """Per dataset, the most alike pairs of different entries, one column per metric."""
    frame = results.frame
    for dataset, info in results.datasets.items():
        part = frame[(frame["dataset"] == dataset) & (frame["a"] != frame["b"])]
        table = Table(title=f"{dataset}: {len(info['entries'])} entries, {info['n_rows']:,} images")
        table.add_column("a", no_wrap=True)
        table.add_column("b", no_wrap=True)
        metrics = results.metrics
        for metric in metrics:
            table.add_column(metric, justify="right")
        if part.empty:
            table.caption = "one entry: only its comparison with itself"
            console.print(table)
            continue
        wide = part.pivot_table(index=["a", "b"], columns="metric", values="value", sort=False)
        wide = wide.sort_values(metrics[0], ascending=False)
        for (a, b), values in wide.head(SIMILARITY_ROWS_SHOWN).iterrows():
            table.add_row(a, b, *(f"{values[m]:.3f}" for m in metrics))
        if len(wide) > SIMILARITY_ROWS_SHOWN:
            table.caption = f"{len(wide) - SIMILARITY_ROWS_SHOWN} more pairs in similarity.csv"
        console.print(table)


def main() -> None:
    run_app(app)
