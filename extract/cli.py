"""`extract run | submit | models | datasets`: embed datasets with frozen models into the cache."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medprobe.cache.console import run_app, table_console
from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.root import CACHE_DIR_ENV
from medprobe.extract.api import extract
from medprobe.extract.config import DATA_CONFIG_ENV, ConfiguredDataset, load_data_config
from medprobe.extract.datasets import DATASETS
from medprobe.extract.options import parse_options
from medprobe.extract.progress import ProgressLines
from medprobe.extract.scaleout.shards import resolve_shard, shard_device
from medprobe.extract.scaleout.submit import DEFAULT_TIME, SlurmResources, plan_request
from medprobe.extract.scaleout.submit import submit as submit_shards

app = typer.Typer(
    help="Run frozen vision models once over every image and cache the embeddings (HDF5).",
    no_args_is_help=True,
    add_completion=False,
)


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
            Console(soft_wrap=True).print(
                escape(f"skipping {item.name}: {item.path} does not exist")
            )
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
    models: Annotated[
        str,
        typer.Option(
            "--model",
            help="model name(s), comma-separated: one pass feeds all; see `extract models`",
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
            help="i/n: run slice i of n (one per GPU or array task), or 'auto': i and n from "
            "torchrun (RANK, WORLD_SIZE; the GPU from LOCAL_RANK) or SLURM (array task, or "
            "task); the last shard to finish joins them into the usual store"
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
    tokens: Annotated[
        int | None,
        typer.Option(
            help="also store each image's token grid (patch tokens or feature map), pooled to "
            "at most N x N positions plus class/register tokens, float16 (keyed apart; the "
            "plan line states bytes per image)"
        ),
    ] = None,
) -> None:
    """Embed one dataset (or every configured one) with one or more models.

    A store that is already complete is skipped; an interrupted one resumes where it stopped.
    """
    assignment = resolve_shard(shard)
    if assignment.local_rank is not None:
        import torch

        device = shard_device(device, assignment.local_rank, torch.cuda.device_count())
    console = Console(soft_wrap=True)  # paths stay whole, to be pasted
    if shard is not None:
        console.print(f"shard: {escape(assignment.source)}, device {escape(device)}")
    for item in _datasets_to_run(dataset, data_dir, config, parse_options(option or [])):
        report = extract(
            item.name,
            models,
            data_dir=item.path,
            cache_dir=cache_dir,
            device=device,
            dataset_options=item.options,
            batch_size=batch_size,
            num_workers=num_workers,
            on_error=on_error,
            limit=limit,
            dtype=dtype,
            weights=weights,
            pretrained=pretrained,
            compile=compile,
            cache_pixels=cache_pixels,
            shard=assignment.shard,
            decode=decode,
            tokens=tokens,
        )
        console.print(
            f"[bold]{escape(report.dataset)}[/]: {report.n_images} images, {escape(report.split)}"
        )
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
def submit(
    models: Annotated[
        str, typer.Option("--model", help="model name(s), comma-separated, as for `extract run`")
    ],
    dataset: Annotated[str, typer.Option(help="dataset adapter (see `extract datasets`)")],
    shards: Annotated[int, typer.Option(help="number of shard jobs (one GPU each)")],
    executor: Annotated[
        str,
        typer.Option(
            help="'slurm': one job array (run on a login node); 'local': one process per shard "
            "on this machine"
        ),
    ] = "slurm",
    data_dir: Annotated[
        Path | None, typer.Option(help="dataset root (default data/DATASET)")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help=f"cache root (env {CACHE_DIR_ENV}; default ./embeddings)")
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option(help="adapter option key=value, repeatable")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N, in each job")] = "auto",
    batch_size: Annotated[int, typer.Option(help="images per batch")] = 64,
    num_workers: Annotated[
        int | None,
        typer.Option("--workers", help="decode workers per job (default: its cores - 1)"),
    ] = None,
    on_error: Annotated[str, typer.Option(help="unreadable image: 'fail' or 'skip'")] = "fail",
    limit: Annotated[int | None, typer.Option(help="only N images, spread evenly")] = None,
    dtype: Annotated[str, typer.Option(help="stored precision: float16 | float32")] = "float16",
    weights: Annotated[
        Path | None, typer.Option(help="local checkpoint file (one --model only)")
    ] = None,
    pretrained: Annotated[bool, typer.Option(help="--no-pretrained: random init")] = True,
    decode: Annotated[str, typer.Option(help="'cpu' or 'gpu' (nvJPEG) decoding")] = "cpu",
    tokens: Annotated[
        int | None, typer.Option(help="also store token grids pooled to at most N x N")
    ] = None,
    partition: Annotated[str | None, typer.Option(help="SLURM partition")] = None,
    gpus_per_node: Annotated[
        int | None,
        typer.Option(
            help="GPUs per job (SLURM); with --executor local, the GPUs of this machine that "
            "the shards share round robin (default: all)"
        ),
    ] = None,
    cpus_per_task: Annotated[
        int | None, typer.Option(help="SLURM CPUs per job: decoding needs several")
    ] = None,
    mem: Annotated[str | None, typer.Option(help="SLURM memory per job, e.g. 64G")] = None,
    time: Annotated[
        str,
        typer.Option(help="time limit per job: minutes, HH:MM:SS or D-HH:MM:SS; requeued past it"),
    ] = DEFAULT_TIME,
    account: Annotated[str | None, typer.Option(help="SLURM account")] = None,
    qos: Annotated[str | None, typer.Option(help="SLURM quality of service")] = None,
    array_parallelism: Annotated[
        int | None, typer.Option(help="at most this many SLURM array tasks at once")
    ] = None,
    log_dir: Annotated[
        Path | None,
        typer.Option(help="submitit's folder for job logs (default CACHE/submitit/TIMESTAMP)"),
    ] = None,
    wait: Annotated[
        bool | None,
        typer.Option(
            help="block until every shard ended and the store is joined (default: yes for "
            "--executor local, no for slurm)"
        ),
    ] = None,
) -> None:
    """Run `extract run --shard i/N` for every i as cluster jobs (submitit), joined at the end.

    Preempted or timed-out jobs are requeued and resume from their journals; rerunning the same
    command reruns only what is unfinished.
    """
    resources = SlurmResources(
        partition=partition,
        gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task,
        mem=mem,
        time=time,
        account=account,
        qos=qos,
        array_parallelism=array_parallelism,
    )
    request = plan_request(
        dataset,
        models,
        shards=shards,
        data_dir=data_dir,
        cache_dir=cache_dir,
        device=device,
        dataset_options=parse_options(option or []),
        batch_size=batch_size,
        num_workers=num_workers,
        on_error=on_error,
        limit=limit,
        dtype=dtype,
        weights=weights,
        pretrained=pretrained,
        decode=decode,
        tokens=tokens,
    )
    submission = submit_shards(
        request, executor=executor, shards=shards, log_folder=log_dir, resources=resources
    )
    console = Console(soft_wrap=True)  # paths stay whole, to be pasted
    if not submission.jobs:
        console.print(
            f"[bold]{escape(dataset)}[/]: every store is already complete; nothing submitted"
        )
        for path in submission.already_complete:
            console.print(f"  [green]store[/] {escape(str(path))}")
        return
    kept = shards - len(submission.shards)
    console.print(
        f"[bold]{escape(dataset)}[/]: {len(submission.shards)} of {shards} shard job(s) "
        f"({executor}): "
        + ", ".join(f"shard {s.index} job {s.job_id}" for s in submission.shards)
        + (f"; {kept} shard(s) already complete, kept" if kept else "")
    )
    console.print(f"  logs: {escape(str(submission.log_folder))}")
    if not (executor == "local" if wait is None else wait):
        return
    result = submission.wait(ProgressLines(console))
    for path in result.stores:
        console.print(f"  [green]store[/] {escape(str(path))}")
    if result.failed:
        for status in result.failed:
            console.print(
                f"  [red]shard {status.index}/{shards} (job {status.job_id}) failed:[/] "
                f"{escape(status.error or '')}\n    stdout: {escape(str(status.stdout))}\n"
                f"    stderr: {escape(str(status.stderr))}"
            )
        console.print("  fix the cause and rerun the same command: finished shards are kept")
        raise typer.Exit(1)


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
        table.add_row(name, entry.layout, ", ".join(entry.option_names) or "-")
    table_console().print(table)


def main() -> None:
    run_app(app)
