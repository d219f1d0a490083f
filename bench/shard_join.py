"""Shard-join benchmark: peak memory and time of joining shard stores, streamed against the naive
join that holds every row in a dict (the toolkit's join before it streamed).

Shard stores are written through the real StoreWriter with synthetic embeddings and no model:
200,000 rows by default (70/10/20 train/val/test, 8 classes, 12 images skipped under --on-error
skip), 3 poolings of 768-d float16, 4 shards. A join's cost does not depend on the values (the
store is not compressed), so they are a cheap correlated stand-in: rank-128 Gaussian factors
mixed through a random basis with singular values k^-0.5, plus 1 % isotropic noise.

Each join runs alone in a fresh Python process, which reports its resident-set peak (Linux's
VmHWM): unlike tracemalloc it counts HDF5's C buffers and numpy's allocations alike, everything
the join costs the machine. (Not `ru_maxrss`, which a child inherits from the process that forked
it.) A third process does all a join does before joining (imports, the row table, opening the
shard stores) and stops there: its peak is the floor both joins start from. The streamed join's
store is checked equal, dataset by dataset, to the naive join's.

    python -m bench.shard_join [--rows 200000] [--dim 768] [--shards 4] [--quick]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from medprobe.cache import RowTable, StoreSpec, StoreWriter, open_store, store_path
from medprobe.cache.layout.schema import SPLITS
from medprobe.extract.scaleout.shards import JOIN_CHUNK_ROWS, join_shards, shard_root, shard_spec

POOLINGS = ("cls", "mean", "patch_max")
N_SKIPPED = 12
INFO = {"data_root": "/data/synthetic", "limit": None}


def synthetic_rows(n_rows: int) -> RowTable:
    rng = np.random.default_rng(0)
    splits = rng.choice(SPLITS, size=n_rows, p=[0.7, 0.1, 0.2])
    return RowTable(
        ids=[f"patient{i // 3:06d}/study1/view{i % 3}_frontal.jpg" for i in range(n_rows)],
        splits=list(splits),
        labels=rng.integers(0, 8, n_rows),
    )


def full_spec(rows: RowTable, dim: int) -> StoreSpec:
    return StoreSpec(
        dataset={"name": "synthetic", "fingerprint": rows.fingerprint(), "options": {}},
        model={"name": f"synthetic-{dim}d", "source": "bench"},
        preprocessing={"input_size": 224},
        poolings=POOLINGS,
        task={"kind": "multiclass", "label_names": [str(c) for c in range(8)]},
    )


def skipped_positions(n_rows: int) -> set[int]:
    return {int(p) for p in np.linspace(5, n_rows - 5, N_SKIPPED).round()}


def write_shard_stores(root: Path, rows: RowTable, dim: int, count: int) -> None:
    """Shard i holds rows i, i+count, … as `extract run --shard i/count` would write them."""
    rng = np.random.default_rng(1)
    rank = 128
    singular_values = np.arange(1, rank + 1) ** -0.5
    bases = {p: singular_values[:, None] * rng.normal(size=(rank, dim)) for p in POOLINGS}
    skipped = skipped_positions(len(rows))
    spec = full_spec(rows, dim)
    for index in range(count):
        positions = np.arange(index, len(rows), count)
        shard_rows = RowTable(
            ids=[rows.ids[p] for p in positions],
            splits=[rows.splits[p] for p in positions],
            labels=rows.labels[positions],
        )
        shard = shard_spec(spec, index, count)
        path = store_path(shard_root(root), shard)
        with StoreWriter(path, shard, shard_rows, info=INFO, flush_rows=JOIN_CHUNK_ROWS) as writer:
            for start in range(0, len(positions), JOIN_CHUNK_ROWS):
                chunk = positions[start : start + JOIN_CHUNK_ROWS]
                ok = np.array([p not in skipped for p in chunk])
                n_ok = int(ok.sum())
                factors = rng.normal(size=(n_ok, rank))
                embeddings = {
                    p: factors @ basis + 0.01 * rng.normal(size=(n_ok, dim))
                    for p, basis in bases.items()
                }
                failures = {
                    start + j: "cannot decode image (synthetic)" for j in np.flatnonzero(~ok)
                }
                writer.append(start, ok, embeddings, failures)
            writer.finish()


def naive_join(spec: StoreSpec, rows: RowTable, count: int, root: Path, target: Path) -> None:
    """The join as it was: every shard row into a dict keyed by image id, then one `append`
    per row in unsharded order."""
    embeddings: dict[str, dict[str, np.ndarray]] = {}
    skipped: dict[str, str] = {}
    for index in range(count):
        store = open_store(store_path(shard_root(root), shard_spec(spec, index, count)))
        skipped.update(store.skipped())
        for split in store.splits:
            arrays = {p: store.embeddings(split, p, dtype=None) for p in spec.poolings}
            for row, image_id in enumerate(store.ids(split)):
                embeddings[image_id] = {p: values[row] for p, values in arrays.items()}
    with StoreWriter(target, spec, rows, info=INFO) as writer:
        for position, image_id in enumerate(rows.ids):
            ok = image_id in embeddings
            values = {
                p: (embeddings[image_id][p][None] if ok else np.zeros((0, 0)))
                for p in spec.poolings
            }
            writer.append(
                position, np.array([ok]), values, {} if ok else {position: skipped[image_id]}
            )
        writer.finish()


def peak_rss_mib() -> float:
    """This process's peak resident set since it started (exec), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status: this benchmark measures memory on Linux")


def measure(mode: str, workdir: Path, n_rows: int, dim: int, count: int) -> dict:
    """Run one join (or, for 'floor', everything before it) in this process; its figures."""
    rows = synthetic_rows(n_rows)
    spec = full_spec(rows, dim)
    shards = [
        open_store(store_path(shard_root(workdir), shard_spec(spec, i, count)))
        for i in range(count)
    ]
    assert all(s.complete for s in shards)
    started = time.perf_counter()
    target = None
    if mode == "naive":
        target = store_path(workdir / "naive", spec)
        naive_join(spec, rows, count, workdir, target)
    elif mode == "streamed":
        target = join_shards(spec, rows, count, workdir, INFO)
    seconds = time.perf_counter() - started
    return {
        "peak_rss_mib": peak_rss_mib(),
        "seconds": seconds,
        "store_bytes": target.stat().st_size if target else 0,
        "store": str(target) if target else None,
    }


def in_fresh_process(mode: str, workdir: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "bench.shard_join", "--measure", mode]
    command += ["--workdir", str(workdir), "--rows", str(args.rows), "--dim", str(args.dim)]
    command += ["--shards", str(args.shards)]
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def dataset_names(handle: h5py.File) -> list[str]:
    names: list[str] = []
    handle.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return sorted(names)


def assert_same_content(a: Path, b: Path) -> None:
    """Every dataset of the two stores equal, read a slice at a time (they are large)."""
    with h5py.File(a, "r") as left, h5py.File(b, "r") as right:
        names = dataset_names(left)
        assert names == dataset_names(right), "the two joins wrote different datasets"
        for name in names:
            assert left[name].shape == right[name].shape and left[name].dtype == right[name].dtype
            for start in range(0, left[name].shape[0], 65536):
                window = slice(start, start + 65536)
                assert np.array_equal(left[name][window], right[name][window]), name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="20,000 rows (smoke run)")
    parser.add_argument("--measure", choices=["floor", "naive", "streamed"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.workdir, args.rows, args.dim, args.shards)))
        return
    if args.quick:
        args.rows = 20_000
    sys.stdout.reconfigure(line_buffering=True)
    workdir = Path(tempfile.mkdtemp(prefix="shard-join-"))
    try:
        started = time.perf_counter()
        write_shard_stores(workdir, synthetic_rows(args.rows), args.dim, args.shards)
        print(
            f"{args.shards} shard stores of {args.rows:,} rows x {len(POOLINGS)} poolings x "
            f"{args.dim}-d float16 ({N_SKIPPED} skipped) written in "
            f"{time.perf_counter() - started:.0f} s; chunk {JOIN_CHUNK_ROWS} rows"
        )
        floor = in_fresh_process("floor", workdir, args)
        naive = in_fresh_process("naive", workdir, args)
        streamed = in_fresh_process("streamed", workdir, args)
        assert_same_content(Path(streamed["store"]), Path(naive["store"]))
        size_mib = streamed["store_bytes"] / 2**20
        print(f"joined store: {size_mib:,.0f} MiB; the two joins wrote the same datasets")
        print(f"{'':24} {'peak RSS':>10} {'above floor':>12} {'time':>8}")
        print(f"{'floor (no join)':24} {floor['peak_rss_mib']:7,.0f} MiB")
        for name, figures in (("naive dict join", naive), ("streamed join", streamed)):
            above = figures["peak_rss_mib"] - floor["peak_rss_mib"]
            print(
                f"{name:24} {figures['peak_rss_mib']:7,.0f} MiB {above:8,.0f} MiB "
                f"{figures['seconds']:7.1f} s"
            )
        naive_above = naive["peak_rss_mib"] - floor["peak_rss_mib"]
        streamed_above = streamed["peak_rss_mib"] - floor["peak_rss_mib"]
        print(
            f"memory above floor, naive / streamed: {naive_above / max(streamed_above, 1):.1f}x; "
            f"time, naive / streamed: {naive['seconds'] / streamed['seconds']:.1f}x"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
