"""`extract run | models | datasets`: embed datasets with frozen models into the cache."""

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medprobe.cache.console import run_app, table_console
from medprobe.cache.errors import ToolkitError
from medprobe.cache.root import CACHE_DIR_ENV, resolve_cache_root
from medprobe.extract.config import DATA_CONFIG_ENV, ConfiguredDataset, load_data_config
from medprobe.extract.datasets import DATASETS, build_dataset
from medprobe.extract.models import resolve_model
from medprobe.extract.options import ExtractionOptions, check_cache_root, resolve_device
from medprobe.extract.pipeline import extract_dataset
from medprobe.extract.shards import parse_shard

app = typer.Typer(
    help="Run frozen vision models once over every image and cache the embeddings (HDF5).",
    no_args_is_help=True,
    add_completion=False,
)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`key=value` adapter options; values that read as int, float or bool become those."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ToolkitError(f"--option {pair!r}: expected key=value, e.g. uncertain=ones")
        lowered = text.lower()
        value: Any = text
        if lowered in ("true", "false"):
            value = lowered == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(text)
                    break
                except ValueError:
                    continue
        options[key.replace("-", "_")] = value
    return options


def model_names(text: str) -> list[str]:
    """The comma-separated names of `--model`: at least one, none twice."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ToolkitError(
            f"model={text!r}: names no model; pass --model NAME[,NAME...] (see `extract models`)",
            argument="model",
        )
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ToolkitError(
            f"model={text!r}: model {twice[0]!r} is named twice; name each model once",
            argument="model",
        )
    return names


def _datasets_to_run(
    dataset: str | None, data_dir: Path | None, config: Path | None, options: dict[str, Any]
) -> list[ConfiguredDataset]:
    if dataset is not None:
        return [ConfiguredDataset(dataset, data_dir or Path("data") / dataset, options)]
    if data_dir is not None:
        raise ToolkitError("--data-dir needs --dataset to say which layout it holds")
    needs_files = [n for n, e in DATASETS.items() if e.needs_data_dir]
    configured = load_data_config(config, [*needs_files, "digits"])
    present = []
    for item in configured:
        if DATASETS[item.name].needs_data_dir and not item.path.exists():
            Console().print(escape(f"skipping {item.name}: {item.path} does not exist"))
            continue
        present.append(ConfiguredDataset(item.name, item.path, {**item.options, **options}))
    if not present:
        raise ToolkitError(
            "no dataset folder found; pass --dataset NAME --data-dir DIR, or list your datasets "
            f"in datasets.toml (or ${DATA_CONFIG_ENV}); see `extract datasets`"
        )
    return present


@app.command()
def run(
    model: Annotated[
        str,
        typer.Option(
            help="model name(s), comma-separated: one pass feeds all; see `extract models`"
        ),
    ],
    dataset: Annotated[
        str | None,
        typer.Option(
            help="dataset adapter (see `extract datasets`); omitted: every configured dataset"
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="dataset root (default data/DATASET)")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help=f"cache root (env {CACHE_DIR_ENV}; default ./embeddings)")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help=f"data config TOML (env {DATA_CONFIG_ENV}; default ./datasets.toml)"),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            help="adapter option key=value, repeatable (e.g. uncertain=ones, split_by=patient)"
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    batch_size: Annotated[
        int, typer.Option(help="images per batch; halves itself on CUDA OOM")
    ] = 64,
    num_workers: Annotated[
        int | None, typer.Option("--workers", help="decode workers (default: cores - 1)")
    ] = None,
    on_error: Annotated[
        str,
        typer.Option(
            help="unreadable image: 'fail' stops, naming the file; 'skip' leaves it out, recorded"
        ),
    ] = "fail",
    limit: Annotated[
        int | None,
        typer.Option(help="only N images, spread evenly (a trial run; its store is keyed apart)"),
    ] = None,
    dtype: Annotated[str, typer.Option(help="stored precision: float16 | float32")] = "float16",
    weights: Annotated[
        Path | None,
        typer.Option(help="local checkpoint file for an offline machine (one --model only)"),
    ] = None,
    pretrained: Annotated[
        bool, typer.Option(help="--no-pretrained: random init (tests, speed runs); keyed apart")
    ] = True,
    compile: Annotated[bool, typer.Option(help="torch.compile the backbone")] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            help="i/n: run slice i of n (one per GPU or array task); the last shard "
            "to finish joins them into the usual store"
        ),
    ] = None,
    cache_pixels: Annotated[
        bool,
        typer.Option(
            help="also store the decoded, resized uint8 inputs (under <cache>/pixels/) "
            "so later models over this dataset skip decoding"
        ),
    ] = False,
    decode: Annotated[
        str,
        typer.Option(
            help="'cpu': loader workers decode; 'gpu': JPEG files are decoded and resized on the "
            "CUDA device (nvJPEG), for large JPEGs where the CPU is the bottleneck"
        ),
    ] = "cpu",
) -> None:
    """Embed one dataset (or every configured one) with one or more models.

    A store that is already complete is skipped; an interrupted one resumes where it stopped.
    """
    names = model_names(model)
    options = ExtractionOptions(
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        on_error=on_error,
        limit=limit,
        dtype=dtype,
        weights=weights,
        pretrained=pretrained,
        compile=compile,
        cache_pixels=cache_pixels,
        shard=parse_shard(shard) if shard else None,
        decode=decode,
    )
    resolve_device(options.device)  # before any dataset is indexed, as the cache root below
    root = resolve_cache_root(cache_dir)
    check_cache_root(root)
    specs = [resolve_model(name) for name in names]
    console = Console()
    for item in _datasets_to_run(dataset, data_dir, config, parse_options(option or [])):
        loaded = build_dataset(item.name, item.path, **item.options)
        console.print(
            f"[bold]{escape(item.name)}[/]: {len(loaded.rows)} images, "
            + escape(str(loaded.info.get("split", "")))
        )
        report = extract_dataset(loaded, specs, cache_root=root, options=options)
        for path in report.skipped_complete:
            console.print(f"  already complete, skipped: {escape(str(path))}")
        for path in report.written:
            console.print(f"  [green]wrote[/] {escape(str(path))}")
        for path in report.joined:
            console.print(f"  [green]joined all shards into[/] {escape(str(path))}")
        if report.images_per_second:
            console.print(f"  {report.images_per_second:.1f} images/s end to end")
        if report.failures:
            console.print(
                f"  [yellow]{len(report.failures)} image(s) left out (recorded in the store):[/]"
            )
            for image_id, reason in report.failures.items():
                console.print(f"    {escape(image_id)}: {escape(reason)}")


@app.command()
def models(
    check: Annotated[
        str | None,
        typer.Option(help="build NAME's architecture offline (random weights), one forward pass"),
    ] = None,
    costs: Annotated[
        bool, typer.Option(help="add parameters and GFLOPs per image (counted on 'meta')")
    ] = False,
    markdown: Annotated[
        bool,
        typer.Option(help="print docs/models.md's table: costs and what each entry reads"),
    ] = False,
) -> None:
    """Table of the registry: source, checkpoint, input, poolings, embedding size."""
    from medprobe.extract.models.describe import check_model, describe_models, markdown_table

    console = table_console()
    if check is not None:
        for key, value in check_model(check).items():
            console.print(f"{key:>16}: {escape(str(value))}")
        return
    if markdown:
        print(markdown_table(describe_models(with_costs=True, with_notes=True)))
        return
    rows = describe_models(with_costs=costs)
    table = Table(title="models (any other: timm:NAME, hf:ORG/NAME, open_clip:ARCH/TAG)")
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


@app.command()
def datasets() -> None:
    """Table of dataset adapters, the layout each expects, and its options."""
    table = Table(title="datasets")
    for column in ("name", "layout", "options"):
        table.add_column(column)
    for name, entry in sorted(DATASETS.items()):
        fields = [
            f.name
            for f in dataclasses.fields(entry.factory)
            if f.init and f.name not in ("name", "root")
        ]
        table.add_row(name, entry.layout, ", ".join(fields) or "-")
    table_console().print(table)


def main() -> None:
    run_app(app)
