"""What an extraction run may be asked, checked before any work: every option when it is made,
then the models, the device and the cache folder before any model is built or store opened."""

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medprobe.cache import ToolkitError
from medprobe.extract.models import ModelSpec

ON_ERROR_CHOICES = ("fail", "skip")
DECODE_CHOICES = ("cpu", "gpu")
EMBEDDING_DTYPES = ("float16", "float32")
DEVICE_NAMES = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# The largest token grid side `tokens` takes: SAM's 1024 px grid is 64 x 64, the largest native
# grid of the registry, so a larger N stores nothing more.
MAX_TOKEN_SIDE = 64


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ExtractionOptions:
    """How to run, none of which changes a store's content except `dtype`, `pretrained` and
    `tokens` (N: also store each image's token grid pooled to at most N x N; None: none).

    Every field is checked here, so a bad value is refused before any model is built or any
    store opened; messages name the field (the CLI rewrites it into its flag)."""

    device: str = "auto"
    batch_size: int = 64
    num_workers: int | None = None
    on_error: str = "fail"
    limit: int | None = None
    dtype: str = "float16"
    pretrained: bool = True
    weights: Path | None = None
    compile: bool = False
    flush_rows: int = 1024
    progress: bool = True
    cache_pixels: bool = False
    shard: tuple[int, int] | None = None
    decode: str = "cpu"
    tokens: int | None = None

    def __post_init__(self) -> None:
        def refuse(argument: str, value: Any, fix: str) -> None:
            shown = value if isinstance(value, Path) else repr(value)  # paths as typed
            raise ToolkitError(f"{argument}={shown}: {fix}", argument=argument)

        if not isinstance(self.device, str) or not DEVICE_NAMES.fullmatch(self.device):
            refuse("device", self.device, "choose auto, cpu, cuda, cuda:N or mps")
        for argument, minimum in (("batch_size", 1), ("flush_rows", 1)):
            value = getattr(self, argument)
            if not _whole_number(value) or value < minimum:
                refuse(argument, value, f"must be a whole number of at least {minimum}")
        if self.num_workers is not None and (
            not _whole_number(self.num_workers) or self.num_workers < 0
        ):
            refuse("num_workers", self.num_workers, "must be 0 (decode in this process) or more")
        if self.tokens is not None and (
            not _whole_number(self.tokens) or not 1 <= self.tokens <= MAX_TOKEN_SIDE
        ):
            refuse(
                "tokens",
                self.tokens,
                f"the side N of the pooled token grid (at most N x N positions) is a whole number "
                f"from 1 to {MAX_TOKEN_SIDE}, e.g. 8; leave it out to store no tokens",
            )
        if self.limit is not None and (not _whole_number(self.limit) or self.limit < 1):
            refuse("limit", self.limit, "must be at least 1 image (leave it out for all)")
        for argument, choices in (
            ("on_error", ON_ERROR_CHOICES),
            ("dtype", EMBEDDING_DTYPES),
            ("decode", DECODE_CHOICES),
        ):
            if getattr(self, argument) not in choices:
                refuse(argument, getattr(self, argument), f"choose one of {list(choices)}")
        if self.shard is not None:
            index, count = self.shard
            if not (_whole_number(index) and _whole_number(count) and 0 <= index < count):
                refuse("shard", self.shard, "expected (i, n) with 0 <= i < n")
        if self.weights is not None:
            if not Path(self.weights).exists():
                refuse("weights", Path(self.weights), "no such file")
            if not self.pretrained:
                refuse(
                    "weights",
                    Path(self.weights),
                    "a checkpoint file is pretrained weights, and a random init was asked for "
                    "as well; drop one of the two",
                )


def resolve_device(device: str) -> torch.device:
    """`device` as a torch device, refused here when this machine does not have it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ToolkitError(
                f"device={device!r}: CUDA is not available here; use cpu", argument="device"
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ToolkitError(
                f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA "
                "device(s), numbered from 0",
                argument="device",
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ToolkitError(f"device={device!r}: MPS is not available here", argument="device")
    return torch.device(device)


def default_num_workers() -> int:
    """Decoding is the CPU-bound part: use every core but one for it. The cores are those this
    process may run on (a SLURM job or a container gets fewer than the node has)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(16, (cores or 1) - 1))


def check_models(specs: Sequence[ModelSpec], options: ExtractionOptions) -> None:
    """At least one model, each named once, and `weights` only with one model that can take it."""
    if not specs:
        raise ToolkitError("no model to run; name at least one (see `extract models`)")
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ToolkitError(f"model {twice[0]!r} is named twice; name each model once")
    if options.weights is None:
        return
    if len(specs) != 1:
        raise ToolkitError("--weights names one checkpoint; pass exactly one --model with it")
    if Path(options.weights).is_dir() and specs[0].source != "hf":
        raise ToolkitError(
            f"weights={options.weights}: a folder; {specs[0].name} takes a checkpoint file "
            "(only hf: models read a save_pretrained folder)",
            argument="weights",
        )


def check_writable(folders: Sequence[Path]) -> None:
    """Create each folder stores will go into and write a scratch file there: a read-only or
    full cache is refused before a model is built."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise ToolkitError(
                f"cannot write stores into {folder} ({error.strerror or error}); make it "
                "writable or pass another --cache-dir"
            ) from None


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
        name = key.replace("-", "_")
        if name in options:
            raise ToolkitError(
                f"--option {key} is given twice ({name}={options[name]!r} and {pair!r}); "
                "give each option once"
            )
        options[name] = value
    return options
