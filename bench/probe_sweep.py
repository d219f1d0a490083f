"""Probe-sweep benchmark: the batched sweep against the naive one-fit-at-a-time loop.

Synthetic stores of random-but-separable embeddings (4 models x 1 dataset; 20,000 x 768 train,
5,000 test, 10 classes; each model a different separability), shots 1,5,10,25 x 10 seeds x
logreg + kNN + prototype. The naive way is the same protocol with scikit-learn estimators, one
fit at a time (LogisticRegression with the same C search, KNeighborsClassifier), on the same
support sets. It takes minutes, so by default it runs `--naive-seeds` of the seeds and its time
is scaled to all of them (per-seed work is identical); `--naive-seeds 10` measures it whole.

    python -m bench.probe_sweep [--quick] [--naive-seeds N]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medprobe.cache import RowTable, StoreSpec, StoreWriter, store_path
from medprobe.probe.budgets import parse_budgets
from medprobe.probe.data import select_targets
from medprobe.probe.sweep import SweepConfig, draw_supports, run_sweep

MODEL_SEPARATION = {"model-a": 0.9, "model-b": 0.7, "model-c": 0.5, "model-d": 0.35}


def write_synthetic_stores(
    root: Path, *, n_train: int, n_test: int, dim: int, n_classes: int, seed: int = 0
) -> None:
    """One store per model: class means on a random simplex, scaled by the model's separation,
    plus unit Gaussian noise per feature."""
    rng = np.random.default_rng(seed)
    n_rows = n_train + n_test
    labels = rng.integers(0, n_classes, n_rows)
    splits = ["train"] * n_train + ["test"] * n_test
    rows = RowTable(ids=[f"img{i:06d}.png" for i in range(n_rows)], splits=splits, labels=labels)
    for model, separation in MODEL_SEPARATION.items():
        # Scaled so the task is as hard at 768 dimensions as at 128 (distances grow with √dim).
        means = rng.normal(size=(n_classes, dim)) * separation * np.sqrt(128 / dim)
        embeddings = (means[labels] + rng.normal(size=(n_rows, dim))).astype(np.float32)
        spec = StoreSpec(
            dataset={"name": "synthetic", "fingerprint": rows.fingerprint()},
            model={"name": model},
            preprocessing={},
            poolings=("cls",),
            task={
                "kind": "multiclass",
                "headline_metric": "accuracy",
                "label_names": [str(c) for c in range(n_classes)],
            },
        )
        with StoreWriter(store_path(root, spec), spec, rows, flush_rows=n_rows) as writer:
            writer.append(0, np.ones(n_rows, bool), {"cls": embeddings})
            writer.finish()


def timed_sweep(
    root: Path, config: SweepConfig, seeds: int | None = None
) -> tuple[float, pd.DataFrame]:
    targets = select_targets(root)
    supports = draw_supports(targets, config)
    if seeds is not None:
        supports = {k: v for k, v in supports.items() if k[2] < seeds}
        config = SweepConfig(**{**config.__dict__, "seeds": seeds})
    started = time.perf_counter()
    rows = run_sweep(targets, supports, config)
    return time.perf_counter() - started, pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small sweep (smoke run)")
    parser.add_argument(
        "--naive-seeds", type=int, default=2, help="seeds the naive loop runs (time scaled to 10)"
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each figure shows as soon as it is measured
    size = (
        dict(n_train=2000, n_test=500, dim=128)
        if args.quick
        else dict(n_train=20_000, n_test=5_000, dim=768)
    )
    budgets = tuple(parse_budgets("1,5,10,25", None, False))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_synthetic_stores(root, n_classes=10, **size)
        print(
            f"stores: 4 models x {size['n_train']} train x {size['dim']} dims, "
            f"{size['n_test']} test, 10 classes; shots 1,5,10,25 x 10 seeds x 3 probes"
        )
        fast_seconds, fast = timed_sweep(
            root, SweepConfig(budgets=budgets, seeds=10, backend="torch")
        )
        print(f"batched sweep (torch):      {fast_seconds:7.1f} s")
        naive_seconds, naive = timed_sweep(
            root, SweepConfig(budgets=budgets, seeds=10, backend="sklearn"), seeds=args.naive_seeds
        )
        scaled = naive_seconds * 10 / args.naive_seeds
        note = (
            ""
            if args.naive_seeds == 10
            else f" ({naive_seconds:.1f} s for {args.naive_seeds} of 10 seeds, scaled)"
        )
        print(f"naive loop (scikit-learn): {scaled:7.1f} s{note}")
        print(f"speed-up:                   {scaled / fast_seconds:7.1f}x")
        keys = ["model", "method", "budget", "seed", "metric"]
        merged = fast.merge(naive, on=keys, suffixes=("_fast", "_naive"))
        merged = merged[merged["metric"] == "accuracy"]
        difference = (merged["value_fast"] - merged["value_naive"]).abs() * 100
        by_method = (
            merged.assign(points=difference).groupby("method")["points"].agg(["mean", "max"])
        )
        cells = merged.groupby(["model", "method", "budget"])[["value_fast", "value_naive"]].mean()
        by_method["max of seed means"] = (
            (cells["value_fast"] - cells["value_naive"]).abs().mul(100).groupby("method").max()
        )
        print("accuracy |batched - naive| in points, same support sets (per cell, and per")
        print(f"(model, method, budget) mean over the {args.naive_seeds} naive seeds):")
        print(by_method.round(2).to_string())
        summary = (
            fast[fast["metric"] == "accuracy"]
            .groupby(["model", "method", "budget"])["value"]
            .mean()
            .unstack("budget")[[b.label for b in budgets]]
            .round(3)
        )
        print("batched sweep accuracy, mean over 10 seeds:")
        print(summary.to_string())


if __name__ == "__main__":
    main()
