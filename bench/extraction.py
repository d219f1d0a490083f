"""Extraction benchmark: where the time of a pass goes, as four ratios measured in one run.

1. end-to-end images/s from files on disk / pure forward images/s on ready tensors, per model
2. N models in one pass / N models in separate passes (decode once, feed many)
3. reduced-size JPEG decode (libjpeg DCT scaling) / full decode, 3000x2000 JPEGs
4. HDF5 write time as a share of the run
5. the cost of `--tokens 8`: end-to-end images/s and store bytes per image with and without
   tokens, passes alternated (machine load hits both arms alike), and the pure forward pass

It writes its own images (realistic sizes: 390x320 grey JPEG as CheXpert-small, 1024^2 JPEG,
2416x1736 PNG as APTOS fundus photos) into a temporary folder, so it runs anywhere. On a CPU it
uses tiny models (random weights; speed does not depend on them); on CUDA the real architectures.

    python -m bench.extraction [--quick] [--device cuda] [--models vit-b14,vit-l14,sam-b]
                               [--sections 1,2,3,4,5] [--decode cpu,gpu]
"""

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medprobe.cache.writer import StoreWriter
from medprobe.extract.datasets import build_dataset
from medprobe.extract.datasets.images import open_image
from medprobe.extract.loader import DecodedImages, make_loader
from medprobe.extract.models import build_backbone
from medprobe.extract.models.describe import model_costs
from medprobe.extract.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, Preprocessing
from medprobe.extract.pipeline import (
    ExtractionOptions,
    default_num_workers,
    extract_dataset,
    resolve_device,
)
from medprobe.extract.transforms import normalise_on_device

P224 = Preprocessing(224, 256, IMAGENET_MEAN, IMAGENET_STD)
# The token grid section 5 prices: `extract run --tokens 8`.
TOKEN_SIDE = 8
P224_SQUASH = Preprocessing(224, 224, IMAGENET_MEAN, IMAGENET_STD, crop="squash")

# Real architectures for a GPU run (random weights: throughput does not depend on them).
GPU_MODELS = {
    "vit-b14": ModelSpec(
        "vit-b14",
        "timm",
        "vit_base_patch14_dinov2",
        P224,
        ("cls", "mean"),
        build_kwargs={"img_size": 224},
    ),
    "vit-l14": ModelSpec(
        "vit-l14",
        "timm",
        "vit_large_patch14_dinov2",
        P224,
        ("cls", "mean"),
        build_kwargs={"img_size": 224},
    ),
    "sam-b": ModelSpec(
        "sam-b",
        "timm",
        "samvit_base_patch16",
        P224_SQUASH,
        ("mean",),
        build_kwargs={"img_size": 224},
    ),
    "resnet50": ModelSpec("resnet50", "timm", "resnet50", P224, ("pooled",)),
}
# CPU stand-ins: same code path, small enough for a 2-core machine.
CPU_MODELS = {
    "vit-tiny": ModelSpec(
        "vit-tiny", "timm", "vit_tiny_patch16_224", P224, ("cls", "mean"), build_kwargs={"depth": 2}
    ),
    "resnet10t": ModelSpec("resnet10t", "timm", "resnet10t", P224, ("pooled",)),
    "lite0": ModelSpec("lite0", "timm", "tf_efficientnet_lite0", P224, ("pooled",)),
    "vit-tiny-sq": ModelSpec(
        "vit-tiny-sq",
        "timm",
        "vit_tiny_patch16_224",
        P224_SQUASH,
        ("cls",),
        build_kwargs={"depth": 2},
    ),
}


def synthetic_photo(width: int, height: int, rng: np.random.Generator, grey: bool) -> Image.Image:
    """Smooth structure plus sensor noise, so codecs work as hard as on real photographs."""
    coarse = rng.integers(0, 255, (height // 32 + 1, width // 32 + 1, 1 if grey else 3))
    base = Image.fromarray(coarse.astype(np.uint8).squeeze()).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    pixels = np.asarray(base, dtype=np.int16)
    pixels = pixels + rng.normal(0, 6, pixels.shape).astype(np.int16)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_images(
    root: Path,
    *,
    n_images: int,
    size: tuple[int, int],
    suffix: str,
    grey: bool,
    n_unique: int | None = None,
    seed: int = 0,
) -> Path:
    """A folder dataset of two classes: <root>/<class>/<i><suffix>. Past `n_unique` images the
    files are byte copies of the first ones (every file is still read and decoded)."""
    rng = np.random.default_rng(seed)
    written: list[Path] = []
    for i in range(n_images):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}{suffix}"
        if n_unique is not None and i >= n_unique:
            shutil.copyfile(written[i % n_unique], path)
            continue
        image = synthetic_photo(*size, rng, grey)
        if suffix == ".jpg":
            image.save(path, quality=90)
        else:
            image.save(path, compress_level=6)
        written.append(path)
    return root


@contextlib.contextmanager
def timed_store_writes() -> Iterator[list[float]]:
    """Accumulate the seconds spent in StoreWriter.flush and .finish (all HDF5 writes)."""
    spent: list[float] = []
    originals = {name: getattr(StoreWriter, name) for name in ("flush", "finish")}

    def timing(method):
        def wrapper(self, *args, **kwargs):
            started = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                spent.append(time.perf_counter() - started)

        return wrapper

    for name, method in originals.items():
        setattr(StoreWriter, name, timing(method))
    try:
        yield spent
    finally:
        for name, method in originals.items():
            setattr(StoreWriter, name, method)


def pure_forward_rate(
    spec: ModelSpec,
    device: torch.device,
    batch_size: int,
    n_batches: int,
    token_side: int | None = None,
) -> float:
    """images/s of normalise + forward on uint8 tensors already in memory (with the token grid
    pooled to `token_side` and copied to the host too, when set)."""
    backbone = build_backbone(spec, pretrained=False).to(device, memory_format=torch.channels_last)
    backbone.token_side = token_side
    side = spec.preprocessing.input_size
    batch = torch.randint(0, 255, (batch_size, 3, side, side), dtype=torch.uint8)
    if device.type == "cuda":
        batch = batch.pin_memory()
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
    ):
        backbone(normalise_on_device(batch.to(device), spec.preprocessing, channels_last=True))
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(n_batches):
            out = backbone(
                normalise_on_device(
                    batch.to(device, non_blocking=True), spec.preprocessing, channels_last=True
                )
            )
        for value in out.values():
            value.cpu()
        elapsed = time.perf_counter() - started
    return batch_size * n_batches / elapsed


def loader_rate(
    images: Path, preprocessing: Preprocessing, *, batch_size: int, workers: int, pin: bool
) -> float:
    """Steady-state images/s the decode workers deliver with no model behind them: the most any
    model can get from this loader, so efficiency <= loader / forward. Timed from the moment
    every worker has handed over its first batch (before that they all start at once)."""
    dataset = build_dataset("folder", images)
    decoded = DecodedImages(dataset, np.arange(len(dataset)), [preprocessing])
    batches = iter(
        make_loader(decoded, start=0, batch_size=batch_size, num_workers=workers, pin_memory=pin)
    )
    for _ in range(max(1, workers)):
        next(batches)
    started, n_images = time.perf_counter(), 0
    for batch in batches:
        n_images += len(batch.ok)
    return n_images / (time.perf_counter() - started)


def run_pass(
    images: Path, specs: list[ModelSpec], cache_root: Path, options: ExtractionOptions
) -> tuple[float, float, float]:
    """(seconds, images/s, seconds in HDF5 writes) for one pass of `specs` over `images`.

    Seconds cover the whole call (model build included); images/s is the loop's own rate, as
    `extract run` reports it, from the first batch requested to the last one stored.
    """
    dataset = build_dataset("folder", images)
    with timed_store_writes() as spent:
        started = time.perf_counter()
        report = extract_dataset(dataset, specs, cache_root=cache_root, options=options)
        elapsed = time.perf_counter() - started
    return elapsed, report.images_per_second or 0.0, sum(spent)


def tokens_cost(
    images: Path, spec: ModelSpec, root: Path, options: ExtractionOptions, repeats: int
) -> dict[int | None, tuple[float, float]]:
    """{token side (None: no tokens): (median end-to-end images/s, store bytes per image)} over
    `repeats` passes per arm, the arms alternated so that load from elsewhere hits both."""
    rates: dict[int | None, list[float]] = {None: [], TOKEN_SIDE: []}
    sizes: dict[int | None, float] = {}
    n_images = len(list(images.rglob("*.jpg")))
    for repeat in range(repeats):
        for side in rates:
            folder = root / f"{spec.name}-{side}-{repeat}"
            _, rate, _ = run_pass(images, [spec], folder, replace(options, tokens=side))
            rates[side].append(rate)
            sizes[side] = sum(p.stat().st_size for p in folder.rglob("*.h5")) / n_images
    return {side: (float(np.median(rates[side])), sizes[side]) for side in rates}


def decode_ratio(images: list[Path], min_side: int) -> tuple[float, float]:
    """(full decode s/image, reduced decode s/image)."""
    timings = []
    for hint in (None, min_side):
        started = time.perf_counter()
        for path in images:
            open_image(path, min_side=hint)
        timings.append((time.perf_counter() - started) / len(images))
    return timings[0], timings[1]


def device_decode_rate(paths: list[Path], device: torch.device, batch_size: int) -> float:
    """images/s of batched nvJPEG decoding (bytes already in memory) on `device`."""
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    batches = [encoded[i : i + batch_size] for i in range(0, len(encoded), batch_size)]
    decode_jpeg(batches[0], mode=ImageReadMode.RGB, device=device)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for batch in batches:
        decode_jpeg(batch, mode=ImageReadMode.RGB, device=device)
    torch.cuda.synchronize()
    return len(encoded) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", default=None, help="comma-separated keys of the model tables")
    parser.add_argument("--quick", action="store_true", help="fewer images (a smoke run)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--images", type=int, default=None, help="section 1 images (default 256 CPU, 32768 GPU)"
    )
    parser.add_argument(
        "--ceiling", type=float, default=798.0, help="bf16 TFLOP/s the GPU reaches on matmuls"
    )
    parser.add_argument(
        "--sections",
        default="1,2,3,4,5",
        help="which ratios to measure (4 needs 1), e.g. to fit a time limit per command",
    )
    parser.add_argument(
        "--decode",
        default=None,
        help="section 1 decoders to time, of cpu,gpu (default both on CUDA, cpu otherwise)",
    )
    args = parser.parse_args()
    sections = {int(s) for s in args.sections.split(",")}
    if not sections <= {1, 2, 3, 4, 5} or (4 in sections and 1 not in sections):
        parser.error(f"--sections {args.sections}: choose from 1,2,3,4,5; 4 needs 1")
    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    table = GPU_MODELS if on_gpu else CPU_MODELS
    names = args.models.split(",") if args.models else list(table)
    specs = [table[n] for n in names]
    scale = 1 if args.quick else 4
    batch_size = 128 if on_gpu else 32
    n_small = args.images or ((32768 if on_gpu else 64) * (scale if not on_gpu else 1))
    decoders = args.decode.split(",") if args.decode else (["cpu", "gpu"] if on_gpu else ["cpu"])
    if not set(decoders) <= {"cpu", "gpu"} or ("gpu" in decoders and not on_gpu):
        parser.error(f"--decode {args.decode}: choose from cpu,gpu (gpu needs --device cuda)")
    workers = args.workers if args.workers is not None else default_num_workers()
    print(
        f"device {torch.cuda.get_device_name(device) if on_gpu else 'cpu'}; torch "
        f"{torch.__version__}; {os.cpu_count()} cores, {workers} decode workers; models {names}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        options = ExtractionOptions(
            device=str(device),
            batch_size=batch_size,
            pretrained=False,
            num_workers=args.workers,
            progress=False,
        )
        write_seconds, run_seconds = 0.0, 0.0
        if 1 in sections:
            small = write_images(
                tmp_path / "xray",
                n_images=n_small,
                size=(390, 320),
                suffix=".jpg",
                grey=True,
                n_unique=min(n_small, 512),
            )
            print(
                f"\n1. end-to-end ({n_small} 390x320 grey JPEGs from disk) / pure forward "
                "(ready tensors)"
            )
            loader = {}
            for spec in specs:
                geometry = spec.preprocessing
                if geometry.view_key not in loader:
                    loader[geometry.view_key] = loader_rate(
                        small, geometry, batch_size=batch_size, workers=workers, pin=on_gpu
                    )
                forward = pure_forward_rate(spec, device, batch_size, n_batches=2 * scale)
                gflops = model_costs(spec)[1]
                line = f"   {spec.name:12s} forward {forward:8.1f} img/s"
                if on_gpu:
                    tflops = gflops * forward / 1e3
                    line += (
                        f" ({tflops:.0f} TFLOP/s, {100 * tflops / args.ceiling:.0f} % of ceiling)"
                    )
                for decode in decoders:
                    seconds, end_to_end, in_writes = run_pass(
                        small, [spec], tmp_path / f"c1-{decode}", replace(options, decode=decode)
                    )
                    write_seconds += in_writes
                    run_seconds += seconds
                    line += f"\n      decode {decode}: end-to-end {end_to_end:8.1f} img/s, "
                    line += f"efficiency {end_to_end / forward:5.2f}"
                feed = loader[geometry.view_key]
                line += (
                    f"\n      loader alone {feed:8.1f} img/s ({feed / max(1, workers):.0f} per "
                    f"worker): efficiency at most {min(1.0, feed / forward):4.2f}"
                )
                print(line)

        if 2 in sections:
            fundus = write_images(
                tmp_path / "fundus",
                n_images=8 * scale,
                size=(2416, 1736),
                suffix=".png",
                grey=False,
            )
            print(
                f"\n2. {len(specs)} models in one pass / {len(specs)} separate passes "
                "(2416x1736 PNGs)"
            )
            # Untimed first: imports, kernel selection and thread pools are paid here, not by
            # whichever arm happens to run first (section 1 did this when it ran before).
            run_pass(fundus, specs, tmp_path / "c2-warm-up", replace(options, limit=2))
            one_pass, _, _ = run_pass(fundus, specs, tmp_path / "c2a", options)
            separate = sum(run_pass(fundus, [s], tmp_path / "c2b", options)[0] for s in specs)
            print(
                f"   one pass {one_pass:6.1f} s   separate {separate:6.1f} s   ratio "
                f"{one_pass / separate:5.2f}"
            )

        if 3 in sections:
            large_jpegs = write_images(
                tmp_path / "big", n_images=4 * scale, size=(3000, 2000), suffix=".jpg", grey=False
            )
            print("\n3. reduced-size decode / full decode (3000x2000 JPEG, target side 256)")
            paths = sorted(large_jpegs.rglob("*.jpg"))
            full, reduced = decode_ratio(paths, min_side=256)
            print(
                f"   full {full * 1000:6.1f} ms   reduced {reduced * 1000:6.1f} ms   ratio "
                f"{reduced / full:5.2f}   (one core; x{workers} workers: "
                f"{workers / full:.0f} vs {workers / reduced:.0f} img/s)"
            )
            if on_gpu:
                rate = device_decode_rate(paths * 8, device, batch_size=32)
                print(f"   nvJPEG batched full decode on the GPU: {rate:.0f} img/s")

        if 4 in sections:
            print("\n4. HDF5 writes as a share of the run (all section-1 passes)")
            print(
                f"   {write_seconds:6.2f} s of {run_seconds:6.1f} s = "
                f"{100 * write_seconds / run_seconds:4.1f} %"
            )

        if 5 in sections:
            n_tokens = (32 if on_gpu else 16) * scale
            xray = write_images(
                tmp_path / "xray5", n_images=n_tokens, size=(390, 320), suffix=".jpg", grey=True
            )
            print(
                f"\n5. --tokens {TOKEN_SIDE} / no tokens ({n_tokens} 390x320 grey JPEGs, median "
                "of 3 alternated passes each; pure forward on ready tensors)"
            )
            run_pass(xray, specs[:1], tmp_path / "c5-warm-up", replace(options, limit=2))
            for spec in specs:
                costs = tokens_cost(xray, spec, tmp_path / "c5", options, repeats=3)
                (plain, plain_bytes), (tokens, token_bytes) = costs[None], costs[TOKEN_SIDE]
                forward = [
                    pure_forward_rate(spec, device, batch_size, 2 * scale, token_side=side)
                    for side in (None, TOKEN_SIDE, None, TOKEN_SIDE)
                ]
                print(
                    f"   {spec.name:12s} end-to-end {plain:7.1f} -> {tokens:7.1f} img/s "
                    f"(ratio {tokens / plain:4.2f}); store {plain_bytes / 1024:6.1f} -> "
                    f"{token_bytes / 1024:6.1f} KiB/img; forward "
                    f"{max(forward[0::2]):7.1f} -> {max(forward[1::2]):7.1f} img/s"
                )


if __name__ == "__main__":
    main()
