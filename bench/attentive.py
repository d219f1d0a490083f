"""Attentive probe benchmarks (see bench/RESULTS.md).

Sections (`--sections`, comma-separated; all by default):
- contrast: does the probe read tokens, and does it cost anything when pooling suffices? Token
  grids of 64 positions where the class lives at one random position per image (mean pooling
  dilutes it 64 times) or is spread over every position; 10 shots x `--seeds` seeds, 10 classes:
  the attentive probe against logistic regression on the mean token (what a `mean` pooling gives),
  same support sets, accuracy on the test split; where the CPU multiplies bfloat16, the same
  probe with float32 products beside it (time, accuracy, agreement of the predicted classes).
- sweep: an ISIC-sized token store on disk (20,000 x 64 x 768 train, 2,500 val, 2,500 test, float16,
  ISIC 2019's eight-class balance), `probe`'s sweep over shots 1,5,10,25 x 10 seeds, attentive only.
- full: the full budget on the same store (weight decay chosen on val, rows streamed).
- memory: peak resident memory (the child's own VmHWM) of `probe run --full --shots 1,5,10,25
  --methods attentive` on that store, in a subprocess.

Tokens are as correlated as real ones: each image has a shared component mixed through an
ill-conditioned basis (`bench.synthetic.mixing_basis`) that every one of its tokens carries, plus
token noise; the class signal rides on that.

    python -m bench.attentive [--quick] [--sections contrast,sweep,full,memory] [--seeds N]
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.memory import peak_of_probe_run
from bench.synthetic import SEED_STUDY, mixing_basis
from medprobe.cache import RowTable, StoreSpec, StoreWriter, store_path
from medprobe.probe.fit.attentive import ArrayTokens, attentive_scores
from medprobe.probe.fit.attentive.training import compute_dtype
from medprobe.probe.fit.backends import TorchBackend
from medprobe.probe.fit.protocol import ProbeInputs
from medprobe.probe.run.settings import ProbeSettings
from medprobe.probe.run.supports import draw_supports
from medprobe.probe.run.sweep import run_sweep
from medprobe.probe.targets import select_targets

SECTIONS = ("contrast", "sweep", "full", "memory")
SIDE = 8  # 8 x 8 = 64 token positions
GIB = 1024**3


def token_grids(
    rng: np.random.Generator,
    labels: np.ndarray,
    directions: np.ndarray,
    mixing: np.ndarray,
    *,
    where: str,
    strength: float,
) -> np.ndarray:
    """(N, 64, D) float32: an image component (mixed, shared by its tokens) + token noise + the
    class direction, at one random position ('one') or at every position ('spread')."""
    n_rows, dim = len(labels), mixing.shape[0]
    image = 2.0 * rng.standard_normal((n_rows, dim), dtype=np.float32) @ mixing
    grids = rng.standard_normal((n_rows, SIDE * SIDE, dim), dtype=np.float32)
    grids += image[:, None, :]
    signal = strength * directions[labels]
    if where == "one":
        grids[np.arange(n_rows), rng.integers(0, SIDE * SIDE, n_rows)] += signal
    else:
        grids += signal[:, None, :] / SIDE  # the same total signal, 1/8 at each of 64 positions
    return grids


def contrast_section(quick: bool, n_seeds: int) -> None:
    dim, n_classes, shots = (64, 10, 10) if quick else (256, 10, 10)
    n_train, n_test = (1000, 500) if quick else (3000, 2000)
    print(
        f"\n== contrast: {SIDE * SIDE} tokens x {dim}, {n_classes} classes, {shots} shots x "
        f"{n_seeds} seeds, test accuracy (mean over seeds, [min, max])"
    )
    for where, strength in (("one", 3.0), ("spread", 1.5)):
        rng = np.random.default_rng(0)
        directions = rng.normal(size=(n_classes, dim)).astype(np.float32)
        mixing = mixing_basis(rng, dim)
        train_labels = rng.integers(0, n_classes, n_train)
        test_labels = rng.integers(0, n_classes, n_test)
        train = token_grids(rng, train_labels, directions, mixing, where=where, strength=strength)
        test = token_grids(rng, test_labels, directions, mixing, where=where, strength=strength)
        supports = [
            np.concatenate(
                [
                    np.random.default_rng(seed).choice(
                        np.flatnonzero(train_labels == c), shots, replace=False
                    )
                    for c in range(n_classes)
                ]
            )
            for seed in range(n_seeds)
        ]
        inputs = ProbeInputs(
            train=train.mean(1),
            train_labels=train_labels,
            supports=supports,
            seeds=list(range(n_seeds)),
            test=test.mean(1),
            n_classes=n_classes,
        )
        source = ArrayTokens({"train": train, "test": test})
        precisions = {str(compute_dtype("cpu")).removeprefix("torch."): None}
        if "float32" not in precisions:  # side by side: the same probe with float32 products
            precisions["float32"] = torch.float32
        attentive, took = {}, {}
        for name, dtype in precisions.items():
            started, cpu = time.perf_counter(), time.process_time()
            attentive[name] = attentive_scores(inputs, source, dtype=dtype)
            took[name] = (time.perf_counter() - started, time.process_time() - cpu)
        seconds, cpu = next(iter(took.values()))
        linear = TorchBackend().logreg(inputs)
        accuracy = {
            name: np.array([(s.argmax(1) == test_labels).mean() for s in scores])
            for name, scores in (
                ("attentive", next(iter(attentive.values()))),
                ("logreg on mean", linear),
            )
        }
        gap = 100 * (accuracy["attentive"] - accuracy["logreg on mean"])
        print(
            f"class at {where:>6}: "
            + ", ".join(
                f"{name} {100 * a.mean():.1f} % [{100 * a.min():.1f}, {100 * a.max():.1f}]"
                for name, a in accuracy.items()
            )
            + f"; attentive - logreg {gap.mean():+.1f} points (paired by seed, "
            f"[{gap.min():+.1f}, {gap.max():+.1f}]); attentive took {seconds:.1f} s "
            f"({cpu:.1f} s of CPU) with {next(iter(took))} products"
        )
        if "float32" in attentive and len(attentive) > 1:
            exact = attentive["float32"]
            rounded = next(iter(attentive.values()))
            agree = np.mean(
                [(a.argmax(1) == b.argmax(1)).mean() for a, b in zip(rounded, exact, strict=True)]
            )
            f32 = np.array([(s.argmax(1) == test_labels).mean() for s in exact])
            print(
                f"  float32 products: {took['float32'][0]:.1f} s ({took['float32'][1]:.1f} s of "
                f"CPU), {took['float32'][0] / seconds:.2f}x the time; accuracy "
                f"{100 * f32.mean():.1f} %; the two agree on {100 * agree:.1f} % of test classes"
            )


def write_token_store(root: Path, quick: bool) -> None:
    """The ISIC-sized store, chunk by chunk (float16 tokens, never a split in memory)."""
    isic = SEED_STUDY[0]
    n_train, n_val, n_test, dim = (2000, 250, 250, 128) if quick else (20_000, 2_500, 2_500, 768)
    rng = np.random.default_rng(7)
    n_rows = n_train + n_val + n_test
    labels = rng.choice(len(isic.class_frequencies), n_rows, p=isic.class_frequencies)
    rows = RowTable(
        ids=[f"isic/img{i:07d}.jpg" for i in range(n_rows)],
        splits=["train"] * n_train + ["val"] * n_val + ["test"] * n_test,
        labels=labels,
    )
    names = [f"class{c}" for c in range(len(isic.class_frequencies))]
    spec = StoreSpec(
        dataset={"name": "isic2019", "fingerprint": rows.fingerprint()},
        model={"name": "tokens-vit-b"},
        preprocessing={},
        poolings=("mean",),
        task={"kind": "multiclass", "headline_metric": "balanced_accuracy", "label_names": names},
        tokens={"grid": [SIDE, SIDE], "prefix_tokens": 0, "dim": dim},
    )
    directions = rng.normal(size=(len(names), dim)).astype(np.float32)
    mixing = mixing_basis(rng, dim)
    chunk = 1024
    with StoreWriter(store_path(root, spec), spec, rows, flush_rows=chunk) as writer:
        for start in range(0, n_rows, chunk):
            part = labels[start : start + chunk]
            grids = token_grids(rng, part, directions, mixing, where="one", strength=4.0)
            writer.append(start, np.ones(len(part), bool), {"mean": grids.mean(1)}, tokens=grids)
        writer.finish()


def timed(root: Path, settings: ProbeSettings) -> tuple[str, object]:
    """The sweep's wall time and CPU time (every thread's: on a shared machine the wall time
    counts the other processes' turns, the CPU time only this one's work), and its outcomes."""
    targets = select_targets(root)
    supports = draw_supports(targets, settings)
    started, cpu = time.perf_counter(), time.process_time()
    outcomes = run_sweep(targets, supports, settings)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return f"{seconds:.1f} s ({cpu:.1f} s of CPU)", outcomes


def headline(outcomes) -> str:
    import pandas as pd

    frame = pd.DataFrame([row for outcome in outcomes for row in outcome.rows])
    frame = frame[frame.metric == "balanced_accuracy"]
    means = frame.groupby("budget", sort=False).value.mean()
    return ", ".join(f"{budget} {100 * value:.1f} %" for budget, value in means.items())


def memory_section(root: Path) -> None:
    arguments = ["run", "--full", "--shots", "1,5,10,25", "--methods", "attentive", "--allow-fewer"]
    arguments += ["--cache-dir", str(root), "--bootstrap", "0", "--out", str(root / "results")]
    peak_bytes, seconds = peak_of_probe_run(arguments, root)
    print(
        f"\n== memory: probe run {' '.join(arguments[1:6])}: peak resident memory "
        f"{peak_bytes / GIB:.2f} GiB in {seconds:.1f} s (child's VmHWM)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--seeds", type=int, default=10, help="support sets per budget")
    options = parser.parse_args()
    sections = options.sections.split(",")
    if "contrast" in sections:
        contrast_section(options.quick, 3 if options.quick else options.seeds)
    if not {"sweep", "full", "memory"} & set(sections):
        return
    root = Path(tempfile.mkdtemp(prefix="attentive-bench-"))
    try:
        started = time.perf_counter()
        write_token_store(root, options.quick)
        size = sum(p.stat().st_size for p in root.rglob("*.h5")) / GIB
        print(f"\n(token store written in {time.perf_counter() - started:.0f} s, {size:.2f} GiB)")
        if "sweep" in sections:
            settings = ProbeSettings(
                shots=(1, 5, 10, 25),
                seeds=options.seeds,
                methods=("attentive",),
                bootstrap=0,
                allow_fewer=options.quick,  # the quick store has 17 images of its rarest class
            )
            took, outcomes = timed(root, settings)
            print(
                f"== sweep: shots 1,5,10,25 x {options.seeds} seeds, attentive only: "
                f"{took}; balanced accuracy {headline(outcomes)}"
            )
        if "full" in sections:
            settings = ProbeSettings(full=True, methods=("attentive",), bootstrap=0)
            took, outcomes = timed(root, settings)
            print(f"== full budget, attentive only: {took}; balanced accuracy {headline(outcomes)}")
        if "memory" in sections:
            memory_section(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
