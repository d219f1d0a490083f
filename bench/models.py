"""Forward throughput of every registry entry: images/s at batch 128 in bf16, beside its FLOPs.

Each architecture is built offline with random weights (speed does not depend on them) and run
on uint8 tensors already in memory, normalised on the device as the pipeline does; the rate is
the forward pass alone, the ceiling an extraction pass can approach. TFLOP/s achieved is
GFLOPs per image (counted by torch's FLOP counter) times images/s. A model that does not fit
at the batch size is measured at the largest halving that fits, and its row says which.

    python -m bench.models [--models dinov2,sam] [--batch-size 128] [--batches 10]
"""

import argparse
import time

import torch

from medprobe.cache import ToolkitError
from medprobe.extract.models import build_backbone
from medprobe.extract.models.describe import model_costs
from medprobe.extract.models.registry import default_registry, resolve_model
from medprobe.extract.models.spec import ModelSpec
from medprobe.extract.pipeline import resolve_device
from medprobe.extract.transforms import normalise_on_device


def forward_rate(spec: ModelSpec, device: torch.device, batch_size: int, n_batches: int) -> float:
    """images/s of normalise + bf16 forward over `n_batches` after two warm-up batches."""
    backbone = build_backbone(spec, pretrained=False).to(device, memory_format=torch.channels_last)
    side = spec.preprocessing.input_size
    batch = torch.randint(0, 255, (batch_size, 3, side, side), dtype=torch.uint8, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), autocast:
        for _ in range(2):
            backbone(normalise_on_device(batch, spec.preprocessing, channels_last=True))
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(n_batches):
            outputs = backbone(normalise_on_device(batch, spec.preprocessing, channels_last=True))
        for value in outputs.values():
            value.float().cpu()
        return batch_size * n_batches / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", default=None, help="comma-separated short names (default all)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    device = resolve_device(args.device)
    specs = (
        [resolve_model(name) for name in args.models.split(",")]
        if args.models
        else list(default_registry().specs())
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    precision = "bf16 autocast" if device.type == "cuda" else "float32"
    print(f"device {name}; torch {torch.__version__}; batch {args.batch_size}; {precision}")
    print(
        "| model | input | batch | GFLOPs/img | img/s | TFLOP/s |\n|---|---:|---:|---:|---:|---:|"
    )
    for spec in specs:
        size = spec.preprocessing.input_size
        try:
            _, gflops = model_costs(spec)
        except (ToolkitError, ImportError) as error:  # hub-only architectures, missing extras
            print(
                f"| {spec.name} | {size} | - | - | not run: {str(error).splitlines()[0][:80]} | - |"
            )
            continue
        batch_size = args.batch_size
        rate = None
        while rate is None and batch_size >= 1:
            try:
                rate = forward_rate(spec, device, batch_size, args.batches)
            except torch.cuda.OutOfMemoryError:  # as the pipeline does: halve and go on
                torch.cuda.empty_cache()
                batch_size //= 2
        if rate is None:
            print(f"| {spec.name} | {size} | 1 | {gflops:.1f} | out of memory | - |")
            continue
        tflops = gflops * rate / 1e3
        print(
            f"| {spec.name} | {size} | {batch_size} | {gflops:.1f} | {rate:,.0f} | {tflops:.0f} |"
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
