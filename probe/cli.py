"""`probe run | report | similarity`: probes over cached embeddings across label budgets and
seeds, and how alike the models' embeddings of the same images are.

Each command parses its flags, calls one library function (`medprobe.probe.run.runner.probe`,
`Results.load`, `medprobe.probe.similarity.compare.similarity`) and prints; library errors name
library arguments, which the CLI edge rewrites into these flags.
"""

import os
import shlex
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medprobe.cache.console import EXIT_CHECK_FAILED, cli_message, run_app, table_console
from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.atomic import (
    PublishFailed,
    describe_os_error,
    remove_stale_temporaries,
    temporary_name,
)
from medprobe.cache.files.root import CACHE_DIR_ENV
from medprobe.probe.fit.backends import BACKENDS
from medprobe.probe.report.console import print_report
from medprobe.probe.report.html import HTML_FILE, write_html_report, write_similarity_page
from medprobe.probe.report.markdown import write_report
from medprobe.probe.run.results import Results
from medprobe.probe.run.runner import run_probes
from medprobe.probe.run.settings import DEFAULT_METHODS, KNN_VOTES, METHODS, ProbeSettings
from medprobe.probe.similarity.compare import SPLIT_CHOICES
from medprobe.probe.similarity.compare import similarity as compare_representations
from medprobe.probe.similarity.measures import METRICS
from medprobe.probe.similarity.report import SimilarityResults
from medprobe.probe.stats.bootstrap import DEFAULT_RESAMPLES

app = typer.Typer(
    help="Probe cached embeddings across label budgets and seeds; compare models. "
    "Add -v anywhere for progress logs.",
    no_args_is_help=True,
    add_completion=False,
)


def default_out_dir(prefix: str = "") -> Path:
    """results/<prefix><UTC timestamp>: a fresh folder per run."""
    return Path("results") / f"{prefix}{datetime.now(UTC):%Y%m%d-%H%M%S}"


@app.command()
def run(
    context: typer.Context,
    shots: Annotated[str | None, typer.Option(help="shots per class, e.g. 1,5,10")] = None,
    fractions: Annotated[
        str | None, typer.Option(help="fractions of the train split, e.g. 0.01,0.1")
    ] = None,
    full: Annotated[bool, typer.Option(help="also probe with every training label")] = False,
    seeds: Annotated[int, typer.Option(help="support sets drawn per budget")] = 10,
    models: Annotated[str | None, typer.Option(help="only these models (comma-separated)")] = None,
    datasets: Annotated[str | None, typer.Option(help="only these datasets")] = None,
    poolings: Annotated[str | None, typer.Option(help="only these poolings, e.g. cls")] = None,
    methods: Annotated[
        str,
        typer.Option(
            help=f"probes: {','.join(METHODS)} (retrieval and attentive only when asked; "
            "attentive needs stores with tokens)"
        ),
    ] = ",".join(DEFAULT_METHODS),
    knn_k: Annotated[
        str, typer.Option(help="k for k-NN (list; capped by the support size)")
    ] = "20",
    knn_vote: Annotated[
        str, typer.Option(help=f"{' | '.join(KNN_VOTES)} (weighted: DINO's, T=0.07)")
    ] = "weighted",
    backend: Annotated[
        str,
        typer.Option(help=f"{' | '.join(BACKENDS)}: torch is batched and uses CUDA if present"),
    ] = "auto",
    jobs: Annotated[int, typer.Option(help="joblib workers over (store, pooling)")] = 1,
    cluster: Annotated[
        str | None,
        typer.Option(
            help="run the (store, pooling) tasks on Dask: local:N (N worker processes here) "
            "or tcp://HOST:PORT (a running scheduler whose workers see the cache)"
        ),
    ] = None,
    allow_fewer: Annotated[
        bool,
        typer.Option(help="a class with fewer images than asked gives what it has (and says so)"),
    ] = False,
    include_trials: Annotated[
        bool, typer.Option(help="also probe trial stores (extract run --limit)")
    ] = False,
    bootstrap: Annotated[
        int,
        typer.Option(
            help="test-set resamples for intervals over test images and the paired full-budget "
            "tests (whole patients where the store has groups); 0 turns it off, for quick "
            "exploratory sweeps (1,000 resamples cost ~0.15 s per probe on 5,000 test images)"
        ),
    ] = DEFAULT_RESAMPLES,
    save_predictions: Annotated[
        bool,
        typer.Option(help="write every probe's test scores to predictions.h5 in the folder"),
    ] = False,
    cache_dir: Annotated[
        Path | None, typer.Option(help=f"cache root (env {CACHE_DIR_ENV}; default ./embeddings)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="results folder (default ./results/<timestamp>)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing --out folder")] = False,
    subgroups: Annotated[
        str | None,
        typer.Option(
            help="metadata columns to break results down by, e.g. sex,age:0,40,60,80 "
            "(numeric: bins at the edges given, else quartiles) -> subgroups.csv"
        ),
    ] = None,
    aggregate: Annotated[
        str | None,
        typer.Option(
            help="score the test set per study or patient: study | patient, pooled by mean "
            "(default) or max, e.g. study:max"
        ),
    ] = None,
) -> None:
    """Fit logistic-regression, k-NN and prototype probes for every complete store, print the
    tables and write results.csv, summary.csv, paired.csv, supports.json, run.json, report.md,
    report.html and plots."""
    settings = ProbeSettings(
        shots=shots,
        fractions=fractions,
        full=full,
        seeds=seeds,
        models=models,
        datasets=datasets,
        poolings=poolings,
        include_trials=include_trials,
        methods=methods,
        knn_k=knn_k,
        knn_vote=knn_vote,
        allow_fewer=allow_fewer,
        backend=backend,
        jobs=jobs,
        cluster=cluster,
        bootstrap=bootstrap,
        save_predictions=save_predictions,
        cache_dir=cache_dir,
        out=out or default_out_dir(),
        overwrite=overwrite,
        subgroups=subgroups or (),
        aggregate=aggregate,
    )
    with _failures_exit_1():
        results = run_probes(settings, command=_command_line(context))
    console = table_console()
    print_report(results, console)
    for dataset, task in results.run["datasets"].items():
        left_out = task.get("headline_leaves_out") or {}
        if left_out:
            console.print(
                escape(
                    f"{dataset}: {task['headline_metric']} does not cover {len(left_out)} "
                    f"{'labels' if task['kind'] == 'multilabel' else 'classes'}: "
                    + "; ".join(f"{name} ({why})" for name, why in left_out.items())
                ),
                highlight=False,
            )
    console.print(
        f"{len(results.frame)} result rows in {results.run['seconds']:.1f} s -> "
        f"{escape(str(settings.out))} (report: {escape(str(settings.out / 'report.html'))})",
        highlight=False,
    )


def _command_line(context: typer.Context) -> str:
    """`probe <command>` and every option that differs from its default, as a shell would read
    them (from the parsed parameters, so it is the same under a test runner as in a shell)."""
    words = ["probe", context.info_name or ""]
    for parameter in context.command.params:
        name = parameter.name or ""
        value = context.params.get(name)
        if value == parameter.default:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        else:
            words += [flag, str(value)]
    return shlex.join(words)


@app.command()
def report(
    results_dir: Annotated[Path, typer.Argument(help="a folder written by `probe run`")],
    similarity: Annotated[
        Path | None,
        typer.Option(help="a folder written by `probe similarity`: its heatmaps join the page"),
    ] = None,
) -> None:
    """Rebuild report.md, report.html and the plots of a results folder, and print the tables."""
    results = Results.load(results_dir)
    if similarity is None and (results_dir / "similarity").is_dir():
        similarity = results_dir / "similarity"  # `probe similarity --out DIR/similarity`
    similar = None if similarity is None else SimilarityResults.load(similarity)
    with _failures_exit_1():
        path, page = _rewrite_report(results, results_dir, similar)
    print_report(results, table_console())
    Console(soft_wrap=True).print(
        f"report: {escape(str(path))}, {escape(str(page))}", highlight=False
    )


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
    include_trials: Annotated[
        bool, typer.Option(help="also compare trial stores (extract run --limit)")
    ] = False,
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
    CKA, debiased CKA, mutual k-NN alignment; writes similarity.csv, similarity.md,
    similarity.html and a heatmap per dataset and metric. Reads the stores only: no model, no
    GPU."""
    out_dir = out or default_out_dir("similarity-")
    started = time.perf_counter()
    with _failures_exit_1():
        results = compare_representations(
            cache_dir,
            datasets=datasets,
            models=models,
            poolings=poolings,
            metrics=metrics,
            split=split,
            max_rows=max_rows,
            seed=seed,
            knn_k=knn_k,
            on_mismatch=on_mismatch,
            bootstrap=bootstrap,
            include_trials=include_trials,
            out=out_dir,
            overwrite=overwrite,
        )
        page = write_similarity_page(results, out_dir)
    console = table_console()
    _print_similarity(results, console)
    console.print(
        f"compared in {time.perf_counter() - started:.1f} s -> {escape(str(out_dir))} "
        f"(page: {escape(str(page))})",
        highlight=False,
    )


def _print_similarity(results: SimilarityResults, console: Console) -> None:
    """Per dataset, the most alike pairs of different entries, one column per metric."""
    frame = results.frame
    for dataset, info in results.datasets.items():
        part = frame[(frame["dataset"] == dataset) & (frame["a"] != frame["b"])]
        table = Table(
            title=escape(f"{dataset}: {len(info['entries'])} entries, {info['n_rows']:,} images")
        )
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
            table.add_row(escape(a), escape(b), *(f"{values[m]:.3f}" for m in metrics))
        if len(wide) > SIMILARITY_ROWS_SHOWN:
            table.caption = f"{len(wide) - SIMILARITY_ROWS_SHOWN} more pairs in similarity.csv"
        console.print(table)


@contextmanager
def _failures_exit_1() -> Iterator[None]:
    """Writing that failed (a full disk, a folder that turned read-only) is a failure, exit 1,
    said in one line; a user's mistake stays a ToolkitError for `run_app` (exit 2)."""
    try:
        yield
    except PublishFailed as error:
        stderr = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
        stderr.print(f"[bold red]error:[/] {escape(cli_message(error, app))}")
        raise typer.Exit(EXIT_CHECK_FAILED) from None


def _rewrite_report(
    results: Results, results_dir: Path, similarity: SimilarityResults | None
) -> tuple[Path, Path]:
    """Write report.md, report.html and the plots beside a temporary name in `results_dir`, then
    move each into place: a report that cannot be written (a read-only folder, a full disk)
    leaves the old one whole, and a `report.md` that is a folder is refused, not written into."""
    target = results_dir / "report.md"
    if target.exists() and not target.is_file():
        raise ToolkitError(
            f"{target} is not a file; move it away, then rerun `probe report {results_dir}`"
        )
    remove_stale_temporaries(results_dir)
    tmp = temporary_name(results_dir.resolve() / "report")
    try:
        try:
            tmp.mkdir()
            write_report(results, tmp, title=results_dir.resolve().name)
            write_html_report(results, tmp, title=results_dir.resolve().name, similarity=similarity)
            for item in tmp.iterdir():
                os.replace(item, results_dir / item.name)
        except OSError as error:
            raise PublishFailed(
                f"cannot write the report into {results_dir} ({describe_os_error(error)}); "
                "make the folder writable or free space, then rerun `probe report`"
            ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, results_dir / HTML_FILE


def main() -> None:
    run_app(app)
