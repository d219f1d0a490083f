"""Probe benchmarks, each a ratio measured side by side in one run (see bench/RESULTS.md).

Sections (`--sections`, comma-separated; all by default):
- sweep: the batched few-shot sweep against the naive one-fit-at-a-time loop. Synthetic stores
  (4 models x 1 dataset; 20,000 x 768 train, 5,000 test, 10 classes), shots 1,5,10,25 x 10
  seeds x logreg + kNN + prototype. The naive way is the same protocol with scikit-learn
  estimators (LogisticRegression with the same C search, KNeighborsClassifier) on the same
  support sets; it runs `--naive-seeds` of the seeds and its time is scaled to all of them.
- full: full-data logistic regression (200,000 x 1,024 train, 20,000 val and test, 10
  classes): ours against the naive loop a user would write (StandardScaler, then
  LogisticRegression(C) for each C of the grid, the model with the lowest val log-loss).
- multilabel: a CheXpert-shaped store (14 labels, 10 % unknown) at the full budget: all labels
  in one solve against one solve per label.
- memory: peak resident memory of `probe run --full --methods knn,prototype` on 200,000 x 1,024
  train / 20,000 test rows, as a subprocess; and chunked against one-pass scores.
- breakdown: the ISIC-shaped part of the seed study (12 models; shots 1,5,10,25 x 10 seeds x 3
  probes + full, test bootstrap), a default run against the same run with `subgroups="sex,age"`
  and retrieval added to the methods.
- retrieval: peak resident memory of `probe run --full --methods retrieval` on a 200,000 x 1,024
  gallery / 20,000 queries, as a subprocess, against the 4 GiB bound.
- seed-study: 12 models x the seed study's four datasets at their real sizes (ISIC 2019, APTOS
  2019, CBIS-DDSM, CheXpert), shots 1,5,10,25 x 10 seeds x 3 probes plus the full budget, end
  to end through the library.

All data is synthetic and as ill-conditioned as real embeddings (`bench.synthetic`).

    python -m bench.probe_sweep [--quick] [--sections sweep,full,...] [--naive-seeds N]
        [--jobs N] [--bootstrap B]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from bench.memory import peak_of_probe_run
from bench.synthetic import SEED_STUDY, DatasetShape, conditioned, mixing_basis, write_dataset
from medprobe.probe.budgets import make_budgets
from medprobe.probe.run.settings import ProbeSettings
from medprobe.probe.run.supports import draw_supports
from medprobe.probe.run.sweep import run_sweep
from medprobe.probe.targets import select_targets

SECTIONS = ("sweep", "full", "multilabel", "memory", "seed-study", "breakdown", "retrieval")
MODEL_SEPARATION = {"model-a": 0.9, "model-b": 0.7, "model-c": 0.5, "model-d": 0.35}
GIB = 1024**3
SHOTS = (1, 5, 10, 25)


def timed_sweep(
    root: Path,
    config: ProbeSettings,
    seeds: int | None = None,
    datasets: list[str] | None = None,
    models: list[str] | None = None,
) -> tuple[float, pd.DataFrame, list[dict], float]:
    """(seconds of run_sweep, result rows, fit reports, seconds choosing stores and supports)."""
    started = time.perf_counter()
    targets = select_targets(root, datasets=datasets, models=models)
    supports = draw_supports(targets, config)
    setup = time.perf_counter() - started
    if seeds is not None:
        supports = {k: v for k, v in supports.items() if k[2] < seeds}
        config = replace(config, seeds=seeds)
    reports: list[dict] = []
    started = time.perf_counter()
    outcomes = run_sweep(targets, supports, config, on_fit_reports=reports.extend)
    rows = [row for outcome in outcomes for row in outcome.rows]
    return time.perf_counter() - started, pd.DataFrame(rows), reports, setup


def sweep_section(root: Path, quick: bool, naive_seeds: int) -> None:
    size = (
        dict(n_train=2000, n_test=500, dim=128)
        if quick
        else dict(n_train=20_000, n_test=5_000, dim=768)
    )
    shape = DatasetShape(
        "synthetic", size["n_train"], 0, size["n_test"], "multiclass", "accuracy", (0.1,) * 10
    )
    # Scaled so the task is as hard at 768 dimensions as at 128 (distances grow with √dim).
    scale = np.sqrt(128 / size["dim"])
    separations = {model: s * scale for model, s in MODEL_SEPARATION.items()}
    write_dataset(root, shape, separations, dim=size["dim"])
    budgets = make_budgets(SHOTS)
    print(
        f"\n== sweep: 4 models x {size['n_train']} train x {size['dim']} dims, "
        f"{size['n_test']} test, 10 classes; shots 1,5,10,25 x 10 seeds x 3 probes"
    )
    # The fits alone, both ways (bootstrap=0): the test bootstrap scores the same cells the same
    # way whoever fits them; its cost is timed on its own below.
    fast_seconds, fast, _, _ = timed_sweep(
        root, ProbeSettings(shots=SHOTS, backend="torch", bootstrap=0)
    )
    print(f"batched sweep (torch):      {fast_seconds:7.1f} s")
    naive_seconds, naive, _, _ = timed_sweep(
        root, ProbeSettings(shots=SHOTS, backend="sklearn", bootstrap=0), seeds=naive_seeds
    )
    scaled = naive_seconds * 10 / naive_seeds
    note = (
        ""
        if naive_seeds == 10
        else f" ({naive_seconds:.1f} s for {naive_seeds} of 10 seeds, scaled)"
    )
    print(f"naive loop (scikit-learn): {scaled:7.1f} s{note}")
    print(f"speed-up:                   {scaled / fast_seconds:7.1f}x")
    default_seconds, _, _, _ = timed_sweep(root, ProbeSettings(shots=SHOTS, backend="torch"))
    print(
        f"batched sweep with the default test bootstrap ({ProbeSettings.bootstrap} resamples): "
        f"{default_seconds:.1f} s"
    )
    keys = ["model", "method", "budget", "seed", "metric"]
    merged = fast.merge(naive, on=keys, suffixes=("_fast", "_naive"))
    merged = merged[merged["metric"] == "accuracy"]
    difference = (merged["value_fast"] - merged["value_naive"]).abs() * 100
    by_method = merged.assign(points=difference).groupby("method")["points"].agg(["mean", "max"])
    cells = merged.groupby(["model", "method", "budget"])[["value_fast", "value_naive"]].mean()
    by_method["max of seed means"] = (
        (cells["value_fast"] - cells["value_naive"]).abs().mul(100).groupby("method").max()
    )
    print("accuracy |batched - naive| in points, same support sets (per cell, and per")
    print(f"(model, method, budget) mean over the {naive_seeds} naive seeds):")
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


def classification_data(n_train: int, dim: int, n_classes: int, separation: float, seed: int):
    """(features (N, D) float32, labels (N,)) for train + val + test (a tenth of train each)."""
    rng = np.random.default_rng(seed)
    n_rows = n_train + 2 * (n_train // 10)
    labels = rng.integers(0, n_classes, n_rows)
    directions = rng.normal(size=(n_classes, dim)).astype(np.float32) * separation
    offset = rng.normal(size=dim).astype(np.float32)
    return conditioned(rng, directions[labels], mixing_basis(rng, dim), offset), labels


def full_section(quick: bool) -> None:
    """Ours (library call, the full budget's protocol) against the naive scikit-learn loop."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    from medprobe.probe.fit.backends import ProbeInputs, TorchBackend
    from medprobe.probe.fit.logistic import C_GRID

    n_train, dim, n_classes = (20_000, 256, 10) if quick else (200_000, 1024, 10)
    features, labels = classification_data(n_train, dim, n_classes, 0.06, seed=1)
    n_val = n_train // 10
    train, val, test = np.split(features, [n_train, n_train + n_val])
    y_train, y_val, y_test = np.split(labels, [n_train, n_train + n_val])
    print(
        f"\n== full: {n_train:,} x {dim} train, {n_val:,} val, {len(test):,} test, "
        f"{n_classes} classes, C grid {list(C_GRID)}"
    )
    backend = TorchBackend()
    inputs = ProbeInputs(
        train=train,
        train_labels=y_train,
        supports=[np.arange(n_train)],
        seeds=[0],
        test=test,
        n_classes=n_classes,
        val=val,
        val_labels=y_val,
        use_val=True,
    )
    started = time.perf_counter()
    (ours,) = backend.logreg(inputs)
    ours_seconds = time.perf_counter() - started
    (report,) = backend.fit_reports
    started = time.perf_counter()
    scaler = StandardScaler().fit(train)
    train_scaled, val_scaled = scaler.transform(train), scaler.transform(val)
    best = None
    for c in C_GRID:
        fit_started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = LogisticRegression(C=c).fit(train_scaled, y_train)
        loss = log_loss(y_val, model.predict_proba(val_scaled), labels=range(n_classes))
        converged = "" if not caught else " (ConvergenceWarning: stopped at max_iter)"
        print(
            f"  naive C={c:g}: {time.perf_counter() - fit_started:6.1f} s, "
            f"{int(model.n_iter_[0])} iterations, val log-loss {loss:.4f}{converged}"
        )
        if best is None or loss < best[0] - 1e-6:
            best = (loss, c, model)
    _, naive_c, naive_model = best
    naive_accuracy = float((naive_model.predict(scaler.transform(test)) == y_test).mean())
    naive_seconds = time.perf_counter() - started
    del train_scaled, val_scaled
    ours_accuracy = float((ours.argmax(1) == y_test).mean())
    print(f"ours (torch, one solve):    {ours_seconds:7.1f} s, C={report.c:g}, ", end="")
    print(
        f"{report.iterations} iterations, stop: {report.stop}, largest gradient entry "
        f"{report.max_gradient:.1e}"
    )
    print(f"naive loop (scikit-learn): {naive_seconds:7.1f} s, C={naive_c:g}")
    print(f"speed-up:                   {naive_seconds / ours_seconds:7.1f}x")
    print(
        f"test accuracy: ours {ours_accuracy:.4f}, naive {naive_accuracy:.4f}, "
        f"difference {100 * (ours_accuracy - naive_accuracy):+.2f} points"
    )


def multilabel_section(quick: bool) -> None:
    """All 14 labels in one solve against one solve per label (both ours), full budget."""
    from medprobe.probe.fit.backends import ProbeInputs, TorchBackend
    from medprobe.probe.stats.metrics import auroc_columns

    chexpert = SEED_STUDY[-1]
    n_train, dim = (20_000, 256) if quick else (200_000, 768)
    rng = np.random.default_rng(2)
    n_rows = n_train + 2 * (n_train // 10)
    prevalence = np.asarray(chexpert.prevalences)
    labels = (rng.random((n_rows, len(prevalence))) < prevalence).astype(np.int8)
    labels[rng.random(labels.shape) < chexpert.unknown] = -1
    directions = rng.normal(size=(len(prevalence), dim)).astype(np.float32) * 0.05
    signal = np.clip(labels, 0, 1).astype(np.float32) @ directions
    features = conditioned(rng, signal, mixing_basis(rng, dim), rng.normal(size=dim))
    features = features.astype(np.float32, copy=False)
    del signal
    n_val = n_train // 10
    train, val, test = np.split(features, [n_train, n_train + n_val])
    y_train, y_val, y_test = np.split(labels, [n_train, n_train + n_val])
    print(
        f"\n== multilabel: {n_train:,} x {dim} train, {n_val:,} val, {len(test):,} test, "
        f"{labels.shape[1]} labels, {chexpert.unknown:.0%} unknown; full budget, C on val"
    )
    every_row = [np.arange(n_train)]
    started = time.perf_counter()
    backend = TorchBackend()
    (together,) = backend.logreg(
        ProbeInputs(train, y_train, every_row, [0], test, 2, val, y_val, use_val=True)
    )
    together_seconds = time.perf_counter() - started
    alone_seconds, differences = [], []
    for column in range(labels.shape[1]):
        known_train, known_val = y_train[:, column] >= 0, y_val[:, column] >= 0
        inputs = ProbeInputs(
            train=train,
            train_labels=np.clip(y_train[:, column], 0, 1).astype(np.int64),
            supports=[np.flatnonzero(known_train)],
            seeds=[0],
            test=test,
            n_classes=2,
            val=val[known_val],
            val_labels=y_val[known_val, column].astype(np.int64),
            use_val=True,
        )
        started = time.perf_counter()
        (alone,) = TorchBackend().logreg(inputs)
        alone_seconds.append(time.perf_counter() - started)
        known = y_test[:, column] >= 0
        truth = (y_test[known, column] == 1)[:, None]
        aurocs = [
            auroc_columns(truth, scores[known][:, None])[0]
            for scores in (together[:, column], alone[:, 1])
        ]
        differences.append(abs(aurocs[0] - aurocs[1]))
    single = float(np.mean(alone_seconds))
    unconverged = sum(not r.converged for r in backend.fit_reports)
    print(f"all labels, one solve:      {together_seconds:7.1f} s ({unconverged} not converged)")
    print(
        f"one solve per label:        {sum(alone_seconds):7.1f} s "
        f"(mean {single:.1f} s, range {min(alone_seconds):.1f}-{max(alone_seconds):.1f} s)"
    )
    print(f"batched cost in single-label solves: {together_seconds / single:5.2f}")
    print(f"speed-up over the per-label loop:    {sum(alone_seconds) / together_seconds:5.2f}x")
    print(f"test AUROC |batched - per label|: max {max(differences):.4f} over the labels")


def memory_section(root: Path, quick: bool) -> None:
    """Peak resident memory of the CLI in a child process, its own VmHWM (bench.memory)."""
    import torch

    from medprobe.probe.fit.neighbors import knn_scores, prototype_scores

    n_train, n_test, dim = (20_000, 2_000, 256) if quick else (200_000, 20_000, 1024)
    shape = DatasetShape("memory", n_train, 0, n_test, "multiclass", "accuracy", (0.1,) * 10)
    write_dataset(root, shape, {"model": 0.06}, dim=dim, seed=3)
    print(
        f"\n== memory: probe run --full --methods knn,prototype, {n_train:,} x {dim} train, "
        f"{n_test:,} test (float16 store)"
    )
    arguments = ["run", "--full", "--methods", "knn,prototype", "--cache-dir", str(root)]
    peak_bytes, seconds = peak_of_probe_run([*arguments, "--out", str(root / "results")], root)
    print(f"peak resident memory: {peak_bytes / GIB:.2f} GiB in {seconds:.1f} s")
    split_gib = n_train * dim * 4 / GIB
    print(f"(the train split alone is {split_gib:.2f} GiB as float32)")
    # Chunked against one pass over everything, on a slice small enough for one pass.
    rng = np.random.default_rng(4)
    pool = torch.as_tensor(
        conditioned(rng, np.zeros((20_000, dim), np.float32), mixing_basis(rng, dim), 0.0)
    )
    labels = torch.as_tensor(rng.integers(0, 10, len(pool)))
    queries = pool[:2000] + 0.1
    sets = [(None, labels)]
    whole = dict(query_chunk=len(queries), support_chunk=len(pool))
    knn_gap = max(
        float((a - b).abs().max())
        for a, b in zip(
            knn_scores(pool, sets, queries, 10, k=20),
            knn_scores(pool, sets, queries, 10, k=20, **whole),
            strict=True,
        )
    )
    prototype_gap = max(
        float((a - b).abs().max())
        for a, b in zip(
            prototype_scores(pool, sets, queries, 10),
            prototype_scores(pool, sets, queries, 10, **whole),
            strict=True,
        )
    )
    print(
        f"chunked vs one pass (20,000 x 2,000): max |score difference| k-NN {knn_gap:.1e}, "
        f"prototype {prototype_gap:.1e}"
    )


def seed_study_section(root: Path, quick: bool, jobs: int, bootstrap: int) -> None:
    n_models = 3 if quick else 12
    shrink = 10 if quick else 1
    separations = {f"model-{m:02d}": s for m, s in enumerate(np.linspace(0.03, 0.09, n_models))}
    print(
        f"\n== seed-study: {n_models} models x {len(SEED_STUDY)} datasets, 768 dims, "
        f"shots 1,5,10,25 x 10 seeds x 3 probes + full; jobs {jobs}, test bootstrap {bootstrap}"
    )
    for shape in SEED_STUDY:
        if quick:
            shape = DatasetShape(
                **{
                    **shape.__dict__,
                    "n_train": shape.n_train // shrink,
                    "n_val": shape.n_val // shrink,
                }
            )
        started = time.perf_counter()
        write_dataset(root, shape, separations, dim=768)
        print(
            f"  wrote {shape.name}: {shape.n_train:,} train, {shape.n_val:,} val, "
            f"{shape.n_test:,} test x {n_models} stores in {time.perf_counter() - started:.0f} s"
        )
    # A shrunken dataset has classes with fewer than 25 images.
    config = ProbeSettings(
        shots=SHOTS,
        full=True,
        jobs=jobs,
        allow_fewer=quick,
        bootstrap=bootstrap,
    )
    total, unconverged, fits = 0.0, 0, 0
    for shape in SEED_STUDY:
        seconds, _, reports, setup = timed_sweep(root, config, datasets=[shape.name])
        total += setup + seconds
        fits += len(reports)
        unconverged += sum(not r["converged"] for r in reports)
        print(f"  {shape.name:10s} sweep {seconds:6.1f} s (+ {setup:.1f} s choosing supports)")
    print(f"seed study end to end:     {total:7.1f} s ({unconverged} of {fits} fits not converged)")


def breakdown_section(
    root: Path, quick: bool, bootstrap: int, n_models: int | None, repeats: int
) -> None:
    """Each model's cells are fitted and scored on their own, so a run of one model is a unit of
    the whole, and the shares do not depend on how many models there are (`--breakdown-models 3`
    measures the full size in a quarter of the time). Each round runs every model under the four
    settings, the default beside the one with both, every other unit backwards (no setting
    always first or last). On a shared 2-core machine one run of the same work has taken from
    48 s to 73 s, more than the effect, and the drift is slow: a unit's runs, ~20 s each, share
    the machine's state better than whole runs minutes apart. Reported: the share of the summed
    times, and each unit's share against its own default run, median [range]."""
    n_models = n_models or (3 if quick else 12)
    shape = SEED_STUDY[0]  # ISIC 2019
    if quick:
        shape = replace(shape, n_train=shape.n_train // 10, n_val=shape.n_val // 10)
    separations = {f"model-{m:02d}": s for m, s in enumerate(np.linspace(0.03, 0.09, n_models))}
    write_dataset(root, shape, separations, dim=768, metadata=True)
    print(
        f"\n== breakdown: {shape.name}-shaped, {n_models} models, {shape.n_train:,} train / "
        f"{shape.n_test:,} test; shots 1,5,10,25 x 10 seeds + full; test bootstrap {bootstrap}; "
        f"{repeats} rounds of one run per model and setting (wall clock; CPU time beside it)"
    )
    default = ProbeSettings(shots=SHOTS, full=True, allow_fewer=quick, bootstrap=bootstrap)
    configs = {
        "default run": default,
        "+ both": replace(
            default, subgroups=("sex", "age"), methods=(*default.methods, "retrieval")
        ),
        "+ subgroups sex,age": replace(default, subgroups=("sex", "age")),
        "+ retrieval": replace(default, methods=(*default.methods, "retrieval")),
    }
    wall: dict[str, list[float]] = {name: [] for name in configs}  # one entry per unit
    cpu: dict[str, list[float]] = {name: [] for name in configs}
    for round_ in range(repeats):
        for model in separations:
            order = list(configs.items())
            if len(wall["default run"]) % 2:
                order.reverse()
            for name, config in order:
                cpu_started = time.process_time()
                sweep, _, _, setup = timed_sweep(root, config, models=[model])
                wall[name].append(sweep + setup)
                cpu[name].append(time.process_time() - cpu_started)
            shares = ", ".join(
                f"{name} {wall[name][-1] / wall['default run'][-1] - 1:+.0%}"
                for name in list(configs)[1:]
            )
            print(
                f"  round {round_ + 1}, {model}: default run {wall['default run'][-1]:.1f} s; "
                f"{shares}"
            )
    for name in configs:
        total = sum(wall[name]) / sum(wall["default run"]) - 1
        total_cpu = sum(cpu[name]) / sum(cpu["default run"]) - 1
        per_unit = np.array(wall[name]) / np.array(wall["default run"]) - 1
        print(
            f"  {name:22s} {sum(wall[name]):7.1f} s in all ({total:+.1%}); CPU "
            f"{sum(cpu[name]):.1f} s ({total_cpu:+.1%}); per unit median "
            f"{np.median(per_unit):+.1%} [{per_unit.min():+.0%}, {per_unit.max():+.0%}]"
        )


def retrieval_section(root: Path, quick: bool) -> None:
    """Peak resident memory of `probe run --full --methods retrieval` in a child process (its
    own VmHWM: numpy's and torch's allocations alike), against the 4 GiB bound of issue 25."""
    n_train, n_test, dim = (20_000, 2_000, 256) if quick else (200_000, 20_000, 1024)
    shape = DatasetShape("retrieval", n_train, 0, n_test, "multiclass", "accuracy", (0.1,) * 10)
    write_dataset(root, shape, {"model": 0.06}, dim=dim, seed=5)
    print(
        f"\n== retrieval: probe run --full --methods retrieval, {n_train:,} x {dim} gallery, "
        f"{n_test:,} queries (float16 store), default test bootstrap"
    )
    arguments = ["run", "--full", "--methods", "retrieval", "--cache-dir", str(root)]
    peak_bytes, seconds = peak_of_probe_run([*arguments, "--out", str(root / "results")], root)
    summary = pd.read_csv(root / "results" / "summary.csv")
    map_at_r = summary.loc[summary["metric"] == "map@r", "mean"].iloc[0]
    print(
        f"peak resident memory: {peak_bytes / GIB:.2f} GiB in {seconds:.1f} s (bound 4 GiB; "
        f"the gallery alone is {n_train * dim * 4 / GIB:.2f} GiB as float32); mAP@R {map_at_r:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated, of {list(SECTIONS)}"
    )
    parser.add_argument(
        "--naive-seeds", type=int, default=2, help="seeds the naive sweep runs (time scaled to 10)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="joblib workers for the seed study")
    parser.add_argument(
        "--breakdown-models", type=int, help="models of the breakdown section (default 12, 3 quick)"
    )
    parser.add_argument(
        "--breakdown-repeats",
        type=int,
        default=2,
        help="rounds of the breakdown's runs, one per model and setting (default 2)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=ProbeSettings.bootstrap,
        help="test resamples in the seed study (0: none; the default is probe run's)",
    )
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    sys.stdout.reconfigure(line_buffering=True)  # each figure shows as soon as it is measured
    import torch

    print(
        f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads"
    )
    for section in sections:
        folder = Path(tempfile.mkdtemp(prefix=f"bench-{section}-"))
        try:
            if section == "sweep":
                sweep_section(folder, args.quick, args.naive_seeds)
            elif section == "full":
                full_section(args.quick)
            elif section == "multilabel":
                multilabel_section(args.quick)
            elif section == "memory":
                memory_section(folder, args.quick)
            elif section == "breakdown":
                breakdown_section(
                    folder,
                    args.quick,
                    args.bootstrap,
                    args.breakdown_models,
                    args.breakdown_repeats,
                )
            elif section == "retrieval":
                retrieval_section(folder, args.quick)
            else:
                seed_study_section(folder, args.quick, args.jobs, args.bootstrap)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
