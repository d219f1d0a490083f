"""`cache ls | verify | rm | annotate`: look after the stores under a cache root."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medprobe.cache.annotate import annotate_store, read_metadata_table
from medprobe.cache.console import EXIT_CHECK_FAILED, run_app, table_console
from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.disk import human_size
from medprobe.cache.files.root import CACHE_DIR_ENV, resolve_cache_root
from medprobe.cache.inventory.catalog import (
    StoreEntry,
    list_stores,
    removal_target,
    remove_stale_files,
    remove_store,
)
from medprobe.cache.inventory.verify import verify_notes, verify_store

app = typer.Typer(
    help="Inspect, verify and remove embedding stores.", no_args_is_help=True, add_completion=False
)
CacheDirOption = Annotated[
    Path | None,
    typer.Option("--cache-dir", help=f"cache root (env {CACHE_DIR_ENV}; default ./embeddings)"),
]
COLUMNS = (
    "dataset",
    "model",
    "key",
    "poolings",
    "train",
    "val",
    "test",
    "dim",
    "dtype",
    "size",
    "trial",
    "complete",
)


def _status(entry: StoreEntry) -> str:
    """The 'complete' cell: yes, or why the entry will not be probed as it is."""
    if entry.problem:
        return f"[red]{escape(entry.problem)}[/]"
    if not entry.complete:
        return f"[yellow]no ({entry.rows_done}/{entry.rows_total} rows)[/]"
    if entry.outdated:
        return "[yellow]outdated: extract again[/]"
    notes = [f"same key as {p.name}" for p in entry.same_key]
    if entry.misnamed:
        notes.append(f"should be named {entry.misnamed.name}")
    return f"[yellow]yes ({escape('; '.join(notes))})[/]" if notes else "[green]yes[/]"


@app.command("ls")
def ls(cache_dir: CacheDirOption = None) -> None:
    """Table of stores: dataset, model, poolings, rows per split, dim, dtype, size, trial,
    complete. Also removes the temporaries that killed runs left behind."""
    root = resolve_cache_root(cache_dir)
    console = table_console()
    stale = remove_stale_files(root)
    if stale:
        console.print(f"removed {len(stale)} temporary file(s) left by killed runs")
    entries = list_stores(root)
    if not entries:
        console.print(f"no stores under {escape(str(root))}")
        return
    table = Table(title=escape(f"stores under {root}"))
    # the metadata column only where a store has some: the table stays as narrow as it was
    with_metadata = any(e.metadata for e in entries)
    columns = [*COLUMNS[:-1], "metadata", COLUMNS[-1]] if with_metadata else COLUMNS
    for column in columns:
        numeric = column in ("train", "val", "test", "dim")
        table.add_column(column, justify="right" if numeric else "left")
    for e in entries:
        rows = [str(e.rows.get(s, "-")) if e.complete else "-" for s in ("train", "val", "test")]
        table.add_row(
            escape(e.dataset),
            escape(e.model),
            e.key[:8],
            escape(",".join(e.poolings)),
            *rows,
            str(e.dim or "-"),
            escape(e.dtype),
            human_size(e.size_bytes),
            "yes" if e.trial else "",
            *([escape(",".join(e.metadata))] if with_metadata else []),
            _status(e),
        )
    console.print(table)


def _verify_all(paths: list[Path] | None, cache_dir: Path | None) -> dict[Path, list[str]]:
    """Problems per store: the given paths, else every published file under the cache root
    (files that are not stores fail, and so do two files that hold one key)."""
    if paths:
        return {p: verify_store(p) for p in paths}
    root = resolve_cache_root(cache_dir)
    listed = list_stores(root)
    # Every published file: one whose 'complete' flag is not set fails (a journal still being
    # written is no published file, and `cache ls` shows its progress).
    entries = [e for e in listed if e.usable or e.problem or e.path.is_file()]
    if not entries:
        unfinished = f" ({len(listed)} unfinished: see `cache ls`)" if listed else ""
        raise ToolkitError(f"no stores to verify under {root}{unfinished}")
    results = {}
    for entry in entries:
        problems = [entry.problem] if entry.problem else verify_store(entry.path)
        if entry.same_key:
            copies = ", ".join(map(str, entry.same_key))
            problems.append(f"{copies} holds the same key: one key is one store; `cache rm` one")
        results[entry.path] = problems
    return results


@app.command()
def verify(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="stores to check (default: all)")
    ] = None,
    cache_dir: CacheDirOption = None,
) -> None:
    """Read every store in full: checksums, NaN/Inf, labels within the task's classes, rows
    against ids, duplicate ids, key against spec and file name, complete flag. Exits 1 when a
    store fails."""
    console = Console(highlight=False, soft_wrap=True)
    results = _verify_all(paths, cache_dir)
    for path, problems in results.items():
        console.print(f"{'[red]FAIL[/]' if problems else '[green]ok[/]'} {escape(str(path))}")
        for problem in problems:
            console.print(f"    - {escape(problem)}")
        for note in verify_notes(path) if not problems else []:
            console.print(f"    note: {escape(note)}")
    if any(results.values()):
        raise typer.Exit(EXIT_CHECK_FAILED)


@app.command()
def rm(
    paths: Annotated[
        list[Path], typer.Argument(help="stores (.h5) under the cache root, or their journals")
    ],
    cache_dir: CacheDirOption = None,
) -> None:
    """Delete stores with their unfinished journals, temporaries and lock files. Only stores
    under the cache root; refused while a writer holds a store's lock."""
    root = resolve_cache_root(cache_dir)
    targets = [removal_target(root, p) for p in paths]  # every path checked before any removal
    for target in dict.fromkeys(targets):
        for item in remove_store(target):
            Console(highlight=False, soft_wrap=True).print(f"removed {escape(str(item))}")


@app.command()
def annotate(
    paths: Annotated[list[Path], typer.Argument(help="stores (.h5) to add metadata to")],
    table: Annotated[
        Path, typer.Option("--table", help="CSV: an id column and one column per metadata field")
    ],
    id_column: Annotated[str, typer.Option("--id-column", help="the CSV's image-id column")] = "id",
) -> None:
    """Add per-image metadata (sex, age, view, study, ...) to finished stores, matched by image
    id. The key and every embedding stay byte for byte; earlier metadata is replaced."""
    ids, metadata = read_metadata_table(table, id_column)
    for path in paths:
        store = annotate_store(path, ids, metadata)
        Console(highlight=False, soft_wrap=True).print(
            f"annotated {escape(str(store.path))}: {', '.join(store.metadata_columns)}"
        )


def main() -> None:
    run_app(app)
