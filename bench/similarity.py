"""Representation-similarity benchmark: `similarity` over all pairs of 12 stores against the
per-pair code a user would write, side by side in one run.

Stores: 12 models x 20,000 images x 768 dims (float16, as extraction writes them), written
through the real StoreWriter, each in its own row order (so ids must be matched). Embeddings are
as hard as real ones: a shared latent (with a k^-0.5 spectrum) plus a per-family latent, mixed
through per-model random bases with singular values k^-0.5, model-specific noise and offsets;
families of models resemble each other, so the CKA matrix has structure.

Timed, each including reading the stores:
- cka and cka_debiased at every row (the issue's goal: CKA under 60 s on 2 cores), against the
  per-pair loop of Kornblith et al.'s feature-space code (float64, each pair re-reads both stores,
  re-centres them and recomputes XᵀY, XᵀX and YᵀY); it runs `--naive-pairs` of the 78 pairs and
  is scaled to all (every pair costs the same);
- mutual_knn at the default 10,000-row sample, against scikit-learn's brute cosine
  NearestNeighbors run for both sides of each pair (one pair, scaled);
- all three metrics at once (the default call);
- a 100-replicate bootstrap at 5,000 rows (CKA and debiased CKA) against recomputing the
  shared-work statistics on each resample (2 replicates, scaled).

    python -m bench.similarity [--quick] [--naive-pairs N]
"""

import argparse
import itertools
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors

from medprobe.cache import RowTable, StoreSpec, StoreWriter, open_store, store_path
from medprobe.probe.similarity.compare import similarity
from medprobe.probe.similarity.measures import pairwise_similarities, prepare_entry

LATENT_DIM = 64
N_FAMILIES = 3


def random_orthogonal(dim: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def write_synthetic_stores(
    root: Path, *, n_models: int, n_rows: int, dim: int, seed: int = 0
) -> list[Path]:
    """One float16 store per model, rows in a different order in each; see the module doc."""
    rng = np.random.default_rng(seed)
    spectrum = np.arange(1, LATENT_DIM + 1) ** -0.5
    shared = rng.normal(size=(n_rows, LATENT_DIM)) * spectrum
    families = [rng.normal(size=(n_rows, LATENT_DIM)) * spectrum for _ in range(N_FAMILIES)]
    ids = np.array([f"img{i:06d}.png" for i in range(n_rows)])
    decay = np.arange(1, dim + 1, dtype=np.float32) ** -0.5
    paths = []
    for model in range(n_models):
        signal = shared + 0.8 * families[model % N_FAMILIES]
        mixed = (signal @ rng.normal(size=(LATENT_DIM, dim))).astype(np.float32)
        noise = 0.3 + 1.2 * model / n_models
        features = mixed + noise * rng.standard_normal((n_rows, dim), dtype=np.float32)
        basis = (random_orthogonal(dim, rng) * decay).astype(np.float32)
        features = features @ basis + rng.normal(size=dim).astype(np.float32)
        order = rng.permutation(n_rows)
        rows = RowTable(
            ids=ids[order].tolist(), splits=["train"] * n_rows, labels=np.zeros(n_rows, int)
        )
        spec = StoreSpec(
            dataset={"name": "synthetic", "fingerprint": rows.fingerprint()},
            model={"name": f"model-{model:02d}"},
            preprocessing={},
            poolings=("cls",),
            task={"kind": "multiclass", "headline_metric": "accuracy", "label_names": ["0"]},
        )
        path = store_path(root, spec)
        with StoreWriter(path, spec, rows, flush_rows=n_rows) as writer:
            writer.append(0, np.ones(n_rows, bool), {"cls": features[order]})
            writer.finish()
        paths.append(path)
    return paths


def read_matched(path_a: Path, path_b: Path, n_rows: int | None = None):
    """What a user writes: read both stores whole in float64 and line rows up by id."""
    arrays = []
    for path in (path_a, path_b):
        store = open_store(path)
        arrays.append((store.ids("train"), store.embeddings("train", "cls", dtype=np.float64)))
    (ids_a, x), (ids_b, y) = arrays
    position = {image_id: row for row, image_id in enumerate(ids_b)}
    y = y[[position[image_id] for image_id in ids_a]]
    return (x, y) if n_rows is None else (x[:n_rows], y[:n_rows])


def naive_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """Kornblith et al.'s feature_space_linear_cka, as published (float64, per pair)."""
    x = x - x.mean(axis=0, keepdims=True)
    y = y - y.mean(axis=0, keepdims=True)
    similarity_xy = np.linalg.norm(x.T @ y) ** 2
    norm_x = np.linalg.norm(x.T @ x)
    norm_y = np.linalg.norm(y.T @ y)
    if debiased:
        n = x.shape[0]
        rows_x, rows_y = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
        total_x, total_y = rows_x.sum(), rows_y.sum()

        def unbiased(xty, rx, ry, tx, ty):
            return xty - n / (n - 2) * rx.dot(ry) + tx * ty / ((n - 1) * (n - 2))

        similarity_xy = unbiased(similarity_xy, rows_x, rows_y, total_x, total_y)
        norm_x = np.sqrt(unbiased(norm_x**2, rows_x, rows_x, total_x, total_x))
        norm_y = np.sqrt(unbiased(norm_y**2, rows_y, rows_y, total_y, total_y))
    return float(similarity_xy / (norm_x * norm_y))


def naive_mutual_knn(x: np.ndarray, y: np.ndarray, k: int) -> float:
    sets = [
        NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute")
        .fit(v)
        .kneighbors(return_distance=False)
        for v in (x, y)
    ]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(*sets, strict=True)]))


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 small stores (smoke run)")
    parser.add_argument(
        "--naive-pairs", type=int, default=4, help="pairs the naive CKA loop runs (scaled to all)"
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each figure shows as soon as it is measured
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    size = (
        dict(n_models=4, n_rows=2000, dim=128)
        if args.quick
        else dict(n_models=12, n_rows=20_000, dim=768)
    )
    knn_rows, boot_rows, n_replicates = (1000, 500, 30) if args.quick else (10_000, 5_000, 100)
    n_models = size["n_models"]
    pairs = list(itertools.combinations_with_replacement(range(n_models), 2))
    print(
        f"{n_models} stores x {size['n_rows']:,} rows x {size['dim']} dims (float16); "
        f"{len(pairs)} pairs with the diagonal; {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seconds, paths = timed(write_synthetic_stores, root, **size)
        print(f"wrote the stores in {seconds:.1f} s")

        for metric in ("cka", "cka_debiased"):
            ours, results = timed(similarity, root, metrics=[metric], max_rows=None)
            debiased = metric == "cka_debiased"
            naive_pairs = pairs[: args.naive_pairs]
            naive, naive_values = timed(
                lambda naive_pairs=naive_pairs, debiased=debiased: [
                    naive_cka(*read_matched(paths[i], paths[j]), debiased=debiased)
                    for i, j in naive_pairs
                ]
            )
            scaled = naive * len(pairs) / len(naive_pairs)
            matrix = results.matrix("synthetic", metric).to_numpy()
            difference = max(
                abs(matrix[i, j] - value)
                for (i, j), value in zip(naive_pairs, naive_values, strict=True)
            )
            off_diagonal = matrix[~np.eye(n_models, dtype=bool)]
            print(
                f"{metric:13s} every row:  ours {ours:7.1f} s | naive per-pair {scaled:7.1f} s "
                f"({naive:.1f} s for {len(naive_pairs)} pairs, scaled) | {scaled / ours:5.1f}x | "
                f"max |ours - naive| {difference:.1e} | off-diagonal range "
                f"{off_diagonal.min():.2f}-{off_diagonal.max():.2f}"
            )

        ours, results = timed(similarity, root, metrics=["mutual_knn"], max_rows=knn_rows)
        x, y = read_matched(paths[0], paths[1])
        chosen = np.sort(np.random.default_rng(0).choice(len(x), knn_rows, replace=False))
        naive, naive_value = timed(naive_mutual_knn, x[chosen], y[chosen], 10)
        scaled = naive * len(pairs)
        print(
            f"mutual_knn    {knn_rows:,} rows: ours {ours:7.1f} s | naive sklearn per pair "
            f"{scaled:7.1f} s ({naive:.1f} s for 1 pair, scaled) | {scaled / ours:5.1f}x | "
            f"pair 0-1: {results.matrix('synthetic', 'mutual_knn').iloc[0, 1]:.3f} "
            f"(naive on another sample {naive_value:.3f})"
        )
        del x, y

        ours, _ = timed(similarity, root, max_rows=knn_rows)
        print(f"all 3 metrics {knn_rows:,} rows: ours {ours:7.1f} s (the default call)")

        metrics = ["cka", "cka_debiased"]
        plain, _ = timed(similarity, root, metrics=metrics, max_rows=boot_rows)
        ours, _ = timed(
            similarity, root, metrics=metrics, max_rows=boot_rows, bootstrap=n_replicates
        )
        rng = np.random.default_rng(0)
        arrays = [read_matched(paths[0], p, boot_rows)[1] for p in paths]

        def recompute_on_resamples(n: int) -> None:
            for _ in range(n):
                resample = rng.integers(0, boot_rows, boot_rows)
                prepared = [prepare_entry(a[resample], metrics, 1) for a in arrays]
                pairwise_similarities(prepared, metrics)

        naive_replicates = 2
        naive, _ = timed(recompute_on_resamples, naive_replicates)
        scaled = naive * n_replicates / naive_replicates
        print(
            f"bootstrap {n_replicates} x {boot_rows:,} rows (cka + debiased): ours "
            f"{ours - plain:7.1f} s beyond the {plain:.1f} s point estimate | recomputing each "
            f"resample {scaled:7.1f} s ({naive:.1f} s for {naive_replicates}, scaled) | "
            f"{scaled / (ours - plain):5.1f}x"
        )
    wall, cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
    print(
        f"this run: {wall:.0f} s wall, {cpu:.0f} s of CPU in this process, {cpu / wall:.2f} cores "
        "busy on average (a quiet 2-core machine gives close to 2; less means others shared them)"
    )


if __name__ == "__main__":
    main()
