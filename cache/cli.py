"""`cache ls | verify | rm`: look after the stores under a cache root."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medprobe.cache.catalog import list_stores, remove_store, verify_store
from medprobe.cache.console import run_app, table_console
from medprobe.cache.errors import ToolkitError
from medprobe.cache.root import CACHE_DIR_ENV, resolve_cache_root

app = typer.Typer(
    help="Inspect, verify and remove embedding stores.", no_args_is_help=True, add_completion=False
)
CacheDirOption = Annotated[
    Path | None,
    typer.Option("--cache-dir", help=f"cache root (env {CACHE_DIR_ENV}; default ./embeddings)"),
]


def _human_size(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@app.command("ls")
def ls(cache_dir: CacheDirOption = None) -> None:
    """Table of stores: dataset, model, poolings, rows per split, dim, dtype, size, complete."""
    root = resolve_cache_root(cache_dir)
    entries = list_stores(root)
    if not entries:
        Console().print(f"no stores under {root}")
        return
    table = Table(title=f"stores under {root}")
    for column in (
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
        "complete",
    ):
        table.add_column(
            column, justify="right" if column in ("train", "val", "test", "dim") else "left"
        )
    for e in entries:
        if e.complete:
            rows = [str(e.rows.get(s, "-")) for s in ("train", "val", "test")]
            status = "[yellow]outdated: extract again[/]" if e.outdated else "[green]yes[/]"
        else:
            rows = ["-", "-", "-"]
            status = f"[yellow]no ({e.rows_done}/{e.rows_total} rows)[/]"
        table.add_row(
            e.dataset,
            e.model,
            e.key[:8],
            ",".join(e.poolings),
            *rows,
            str(e.dim or "-"),
            e.dtype,
            _human_size(e.size_bytes),
            status,
        )
    table_console().print(table)


@app.command()
def verify(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="stores to check (default: all)")
    ] = None,
    cache_dir: CacheDirOption = None,
) -> None:
    """Check stores: NaN/Inf, rows against ids, duplicate ids, key against spec, complete flag."""
    targets = paths or [e.path for e in list_stores(resolve_cache_root(cache_dir)) if e.complete]
    if not targets:
        raise ToolkitError("no complete stores to verify")
    console = Console()
    n_bad = 0
    for path in targets:
        problems = verify_store(path)
        n_bad += bool(problems)
        console.print(f"[{'red' if problems else 'green'}]{'FAIL' if problems else 'ok'}[/] {path}")
        for problem in problems:
            console.print(f"    - {problem}")
    if n_bad:
        raise typer.Exit(1)


@app.command()
def rm(
    paths: Annotated[list[Path], typer.Argument(help="store files (.h5) to delete, journals too")],
) -> None:
    """Delete stores with their unfinished journals and lock files."""
    for path in paths:
        removed = remove_store(path)
        if not removed:
            raise ToolkitError(f"nothing to remove at {path}")
        for item in removed:
            Console().print(f"removed {item}")


def main() -> None:
    run_app(app)
