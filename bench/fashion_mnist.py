"""Real images, real weights (issue 24): Fashion-MNIST through EfficientNet-Lite0's 7 x 7 x 1280
feature map, the attentive probe on those tokens against logistic regression on the pooled vector.

What it measures, end to end through the library:
1. a stratified, seeded subset of Fashion-MNIST (Debian's `dataset-fashion-mnist`: the IDX files
   of the official release) written as a folder dataset, `train|test/<class>/<image>.png`;
2. `mp.extract` with `efficientnet-lite0` (ImageNet weights from `efficientnet-lite0-pytorch-
   model`) and `tokens=7`: the global-average-pooled vector (1,280) and the last stage's 7 x 7 x
   1,280 map of each image, float16; extraction throughput and store size;
3. the probe sweep at 1, 5, 10 and 25 shots per class x `--seeds` seeds, logistic regression on
   the pooled vector and the attentive probe on the tokens, on the same support sets, with the
   default test bootstrap; per budget, accuracy (the folder adapter's headline metric) and
   macro AUROC with their intervals, and attentive - logreg paired by seed (the paired t interval
   over seeds and the seeds-and-test bootstrap interval of the difference).

The dataset and the store live under `--work-dir` (default /tmp/medprobe-fashion) and are kept:
a rerun with the same subset finds the store complete and only probes. The tidy rows and the
summary of every metric go to `<work-dir>/results.csv` and `summary.csv`, replaced on each run.

    apt-get install -y dataset-fashion-mnist
    python -m bench.fashion_mnist [--train 1000] [--test 1000] [--seeds 10] [--work-dir DIR]
        [--threads 2] [--device auto]
"""

import argparse
import gzip
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import medprobe as mp
from medprobe.probe.run.runner import assemble_results
from medprobe.probe.run.settings import ProbeSettings
from medprobe.probe.run.supports import draw_supports
from medprobe.probe.run.sweep import TargetOutcome, run_sweep
from medprobe.probe.stats.bootstrap import seeds_and_resamples_interval
from medprobe.probe.stats.paired import paired_differences
from medprobe.probe.targets import select_targets

PACKAGE = "dataset-fashion-mnist"
MODEL = "efficientnet-lite0"
TOKEN_SIDE = 7  # Lite0's last stage at 224 px is 7 x 7: the map as the network computes it
SHOTS = (1, 5, 10, 25)
METHODS = ("logreg", "attentive")
METRICS = ("accuracy", "macro_auroc")  # the folder adapter's headline, then AUROC
# The official label order (zalandoresearch/fashion-mnist README), as folder names.
CLASS_NAMES = (
    "t-shirt-top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
IDX_FILES = {"train": "train", "test": "t10k"}
GIB = 1024**3


def package_folder() -> Path:
    """The folder that holds the Debian package's IDX .gz files, found with `dpkg -L`."""
    install = f"install it: apt-get update && apt-get install -y {PACKAGE}"
    try:
        listed = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit(
            f"no dpkg here to find the Debian package {PACKAGE}; on Debian/Ubuntu {install}, "
            "elsewhere pass --source DIR, a folder with the four Fashion-MNIST IDX .gz files"
        ) from None
    if listed.returncode != 0:
        raise SystemExit(f"the Debian package {PACKAGE} is not installed; {install}")
    images = [p for p in listed.stdout.splitlines() if p.endswith("train-images-idx3-ubyte.gz")]
    if not images:
        raise SystemExit(f"{PACKAGE} lists no train-images-idx3-ubyte.gz; reinstall it: {install}")
    return Path(images[0]).parent


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (gzipped) as uint8: (N, 28, 28) images (magic 2051) or (N,) labels (2049).
    The header is big-endian: magic, then one int32 size per dimension."""
    if not path.is_file():
        raise SystemExit(f"{path} is missing; reinstall {PACKAGE} or check --source")
    data = gzip.decompress(path.read_bytes())
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise SystemExit(
            f"{path}: IDX magic {found}, expected {magic}; the file is not {PACKAGE}'s"
        )
    n_dims = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def stratified_subset(labels: np.ndarray, n_images: int, rng: np.random.Generator) -> np.ndarray:
    """(n_images,) int64 sorted rows, n_images / 10 of each class drawn without replacement."""
    per_class, left = divmod(n_images, len(CLASS_NAMES))
    if left or per_class < 1:
        raise SystemExit(f"{n_images} images: give a multiple of {len(CLASS_NAMES)} (per class)")
    rows = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(rows))


def write_dataset(source: Path, work_dir: Path, n_train: int, n_test: int, seed: int) -> Path:
    """The subset as `<split>/<class>/<row>.png` (what the folder adapter reads), under a name
    that says which subset it is; written in a temporary folder and renamed, so a folder of that
    name is always complete and a rerun reuses it (and so finds its store complete)."""
    root = work_dir / f"fashion-mnist-train{n_train}-test{n_test}-seed{seed}"
    if root.is_dir():
        return root
    rng = np.random.default_rng(seed)
    work_dir.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".writing-", dir=work_dir))
    try:
        for split, n_images in (("train", n_train), ("test", n_test)):
            stem = IDX_FILES[split]
            images = read_idx(source / f"{stem}-images-idx3-ubyte.gz", 2051)
            labels = read_idx(source / f"{stem}-labels-idx1-ubyte.gz", 2049)
            for name in CLASS_NAMES:
                (partial / split / name).mkdir(parents=True)
            for row in stratified_subset(labels, n_images, rng):
                path = partial / split / CLASS_NAMES[labels[row]] / f"{row:05d}.png"
                Image.fromarray(images[row]).save(path)
        partial.chmod(0o755)  # mkdtemp's 0o700 would hide the dataset from other users
        os.replace(partial, root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return root


def extract(data_dir: Path, cache_dir: Path, device: str) -> tuple[float, float | None, Path]:
    """(seconds, images/s of the loop or None when the store was found complete, store path)."""
    started = time.perf_counter()
    report = mp.extract(
        "folder",
        MODEL,
        data_dir=data_dir,
        cache_dir=cache_dir,
        device=device,
        tokens=TOKEN_SIDE,
        progress=False,
    )
    seconds = time.perf_counter() - started
    (store,) = report.stores
    return seconds, report.images_per_second if report.written else None, store


def probe(
    cache_dir: Path, shots: tuple[int, ...], seeds: int
) -> tuple[float, mp.Results, list[TargetOutcome]]:
    """(seconds of the sweep, the run's Results, the outcomes with their test resamples)."""
    settings = ProbeSettings(
        shots=shots, seeds=seeds, methods=METHODS, cache_dir=cache_dir, progress=False
    )
    targets = select_targets(cache_dir, models=[MODEL])
    supports = draw_supports(targets, settings)  # one set per (budget, seed), both methods
    started = time.perf_counter()
    outcomes = run_sweep(targets, supports, settings)
    seconds = time.perf_counter() - started
    return seconds, assemble_results(targets, outcomes, supports, settings), outcomes


def method_differences(frame: pd.DataFrame, outcomes: list[TargetOutcome], metric: str) -> dict:
    """{budget: (mean, t low, t high, p, seeds-and-test low, high)} of attentive - logreg.

    The toolkit pairs entries (model:pooling) within a method; here the two methods of one entry
    are the entries, so each method is named as the model of a single 'probe' method. The same
    support sets and test resamples serve both, so the difference per (seed, resample) is paired.
    """
    as_entries = frame[frame["metric"] == metric].assign(model=frame["method"], method="probe")
    paired = paired_differences(as_entries, metric)
    resampled = {cell: values for outcome in outcomes for cell, values in outcome.resampled.items()}
    differences = {}
    for row in paired.itertuples():
        # paired.csv gives each entry minus the better one; turn it into attentive - logreg
        sign = 1.0 if row.entry.startswith("attentive") else -1.0
        low, high = sorted((sign * row.ci_low, sign * row.ci_high))
        seeds = sorted({cell[2] for cell in resampled if cell[1] == row.budget})
        draws = np.stack(
            [
                resampled[("attentive", row.budget, s)][metric]
                - resampled[("logreg", row.budget, s)][metric]
                for s in seeds
            ]
        )
        both = seeds_and_resamples_interval(draws)
        differences[row.budget] = (sign * row.difference, low, high, row.p_value, *both)
    return differences


def print_table(results: mp.Results, outcomes: list[TargetOutcome]) -> None:
    summary = results.summary()
    for metric in METRICS:
        differences = method_differences(results.frame, outcomes, metric)
        print(
            f"\n{metric} (mean over seeds [95 % t interval over seeds | seeds-and-test bootstrap])"
        )
        print(
            f"{'budget':>9} | {'logreg on pooled':^35} | {'attentive on 7x7 tokens':^35} | "
            f"{'attentive - logreg (paired)':^44}"
        )
        for budget in dict.fromkeys(summary["budget"]):
            cells = []
            for method in METHODS:
                cell = summary[
                    (summary["budget"] == budget)
                    & (summary["method"] == method)
                    & (summary["metric"] == metric)
                ].iloc[0]
                cells.append(
                    f"{cell['mean']:.3f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f} | "
                    f"{cell['ci_seeds_and_test_low']:.3f}, {cell['ci_seeds_and_test_high']:.3f}]"
                )
            mean, low, high, p_value, both_low, both_high = differences[budget]
            print(
                f"{budget:>9} | {cells[0]:^35} | {cells[1]:^35} | {mean:+.3f} [{low:+.3f}, "
                f"{high:+.3f} | {both_low:+.3f}, {both_high:+.3f}] p={p_value:.2g}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=1000, help="training images (10 classes)")
    parser.add_argument("--test", type=int, default=1000, help="test images (10 classes)")
    parser.add_argument("--shots", default=",".join(map(str, SHOTS)), help="per class")
    parser.add_argument("--seeds", type=int, default=10, help="support sets per budget")
    parser.add_argument("--subset-seed", type=int, default=0, help="seeds the subset drawn")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/medprobe-fashion"))
    parser.add_argument("--source", type=Path, default=None, help="IDX folder (default: dpkg)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    options = parser.parse_args()
    shots = tuple(int(n) for n in options.shots.split(","))
    if options.train < max(shots) * len(CLASS_NAMES):
        parser.error(f"--train {options.train}: {max(shots)} shots of 10 classes need more")
    import torch

    torch.set_num_threads(options.threads)
    source = options.source or package_folder()
    started = time.perf_counter()
    data_dir = write_dataset(
        source, options.work_dir, options.train, options.test, options.subset_seed
    )
    print(
        f"Fashion-MNIST from {source}: {options.train} train / {options.test} test images in "
        f"{data_dir} ({time.perf_counter() - started:.1f} s); torch threads {options.threads}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    cache_dir = options.work_dir / "embeddings"
    seconds, rate, store = extract(data_dir, cache_dir, options.device)
    n_images = options.train + options.test
    done = "store found complete, nothing run"
    if rate:
        done = f"{n_images / seconds:.1f} images/s end to end, {rate:.1f} in the loop"
    print(
        f"extraction: {MODEL} --tokens {TOKEN_SIDE}, {n_images} images, {seconds:.1f} s ({done}); "
        f"store {store.stat().st_size / GIB:.3f} GiB, "
        f"{store.stat().st_size / n_images / 1024:.1f} KiB per image"
    )
    seconds, results, outcomes = probe(cache_dir, shots, options.seeds)
    print(
        f"probing: shots {options.shots} x {options.seeds} seeds x "
        f"{' + '.join(METHODS)}, test bootstrap on: {seconds:.1f} s"
    )
    print_table(results, outcomes)
    results.frame.to_csv(options.work_dir / "results.csv", index=False)
    results.summary().to_csv(options.work_dir / "summary.csv", index=False)
    print(f"\nrows and summary (every metric): {options.work_dir}/results.csv, summary.csv")


if __name__ == "__main__":
    main()
