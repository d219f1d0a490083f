"""Stores of Gaussian-blob embeddings with known separability, written through the real writer."""

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from medprobe.cache import RowTable, StoreSpec, StoreWriter, store_path


def write_blob_store(
    root: Path,
    *,
    model: str,
    separation: float,
    dataset: str = "blobs",
    n_train: int = 200,
    n_val: int = 0,
    n_test: int = 100,
    dim: int = 16,
    n_classes: int = 3,
    kind: str = "multiclass",
    headline: str = "accuracy",
    n_labels: int = 0,
    seed: int = 0,
    shuffle_rows: bool = False,
    noise_seed: int | None = None,
    images_per_patient: int = 0,
    preprocessing: dict | None = None,
    complete: bool = True,
    tokens: int = 0,
    prefix_tokens: int = 1,
    token_signal: str = "spread",
    edit_labels: Callable[[np.ndarray, np.ndarray], None] | None = None,
    spectrum: float = 0.0,
    metadata: dict[str, list[str]] | None = None,
) -> Path:
    """Class means at distance ~`separation` apart plus unit noise; the same ids and labels for
    every model of a dataset (they come from `seed`), embeddings differ by model.
    `edit_labels(labels, splits)` may change the drawn labels in place before anything uses
    them (e.g. a label with no positive in train). spectrum > 0 mixes the features through a
    random rotation with singular values k^-spectrum and an offset, ill-conditioned as real
    embeddings are. `metadata`: column -> one str per row in id order ('' missing).

    tokens=s > 0 also stores (N, prefix_tokens + s*s, dim) tokens on an s x s grid
    (`synthetic_tokens`): the prefix tokens are the `cls` embedding, and the grid carries the
    class signal at every position (token_signal='spread') or at one random position per image
    (token_signal='one', unit noise elsewhere: mean pooling dilutes it s*s times)."""
    rng = np.random.default_rng(seed)
    n_rows = n_train + n_val + n_test
    splits = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
    ids = np.array([f"case{i:04d}.png" for i in range(n_rows)])
    if n_labels:
        labels = rng.integers(0, 2, (n_rows, n_labels)).astype(np.int8)
        mask = rng.random((n_rows, n_labels)) > 0.1
        if edit_labels is not None:
            edit_labels(labels, splits)
        signal = labels.astype(float) @ rng.normal(size=(n_labels, dim))
        label_names = [f"finding{j}" for j in range(n_labels)]
    else:
        labels = rng.integers(0, n_classes, n_rows)
        mask = None
        if edit_labels is not None:
            edit_labels(labels, splits)
        signal = rng.normal(size=(n_classes, dim))[labels]
        label_names = [f"class{c}" for c in range(n_classes)]
    model_rng = np.random.default_rng(
        zlib.crc32(model.encode()) if noise_seed is None else noise_seed
    )
    embeddings = (separation * signal + model_rng.normal(size=(n_rows, dim))).astype(np.float32)
    if spectrum:
        rotation = np.linalg.qr(model_rng.normal(size=(dim, dim)))[0]
        mixing = (np.arange(1, dim + 1) ** -spectrum)[:, None] * rotation
        embeddings = (embeddings @ mixing + 3.0).astype(np.float32)
    order = np.random.default_rng(1).permutation(n_rows) if shuffle_rows else np.arange(n_rows)
    groups = None
    if images_per_patient:  # consecutive rows of one split belong to one patient
        groups = np.array([f"patient{i // images_per_patient:04d}" for i in range(n_rows)])
    rows = RowTable(
        ids=ids[order].tolist(),
        splits=splits[order].tolist(),
        labels=labels[order],
        label_mask=None if mask is None else mask[order],
        groups=None if groups is None else groups[order].tolist(),
        metadata=None
        if metadata is None
        else {c: np.asarray(v, dtype=object)[order].tolist() for c, v in metadata.items()},
    )
    task = {
        "kind": "multilabel" if n_labels else kind,
        "label_names": label_names,
        "headline_metric": "mean_auroc" if n_labels else headline,
    }
    token_values = None
    layout = None
    if tokens:
        layout = {"grid": [tokens, tokens], "prefix_tokens": prefix_tokens, "dim": dim}
        token_values = synthetic_tokens(
            embeddings,
            separation * signal,
            model_rng,
            side=tokens,
            prefix_tokens=prefix_tokens,
            token_signal=token_signal,
        )[order]
    spec = StoreSpec(
        dataset={"name": dataset, "fingerprint": rows.fingerprint()},
        model={"name": model},
        preprocessing={"shuffle": shuffle_rows, **(preprocessing or {})},
        poolings=("cls",),
        task=task,
        tokens=layout,
    )
    path = store_path(root, spec)
    with StoreWriter(path, spec, rows, flush_rows=1) as writer:
        if not complete:  # an extraction that stopped half way: a journal, no published store
            half = n_rows // 2
            half_tokens = None if token_values is None else token_values[:half]
            writer.append(
                0, np.ones(half, bool), {"cls": embeddings[order][:half]}, tokens=half_tokens
            )
            return path
        writer.append(0, np.ones(n_rows, bool), {"cls": embeddings[order]}, tokens=token_values)
        writer.finish()
    return path


def synthetic_tokens(
    embeddings: np.ndarray,
    signal: np.ndarray,
    rng: np.random.Generator,
    *,
    side: int,
    prefix_tokens: int,
    token_signal: str,
) -> np.ndarray:
    """(N, prefix_tokens + side**2, D) float32: `embeddings` (N, D) as every prefix token, then
    a side x side grid of unit noise plus `signal` (N, D) at every position ('spread') or at one
    random position per image ('one')."""
    n_rows, dim = embeddings.shape
    grid = rng.normal(size=(n_rows, side * side, dim))
    if token_signal == "spread":
        grid += signal[:, None, :]
    elif token_signal == "one":
        grid[np.arange(n_rows), rng.integers(0, side * side, n_rows)] += signal
    else:
        raise ValueError(f"token_signal={token_signal!r}: 'spread' or 'one'")
    prefix = np.repeat(embeddings[:, None, :], prefix_tokens, axis=1)
    return np.concatenate([prefix, grid], axis=1).astype(np.float32)


@pytest.fixture
def blob_root(tmp_path) -> Path:
    """Two models of one dataset: 'strong' separates the classes far better than 'weak'."""
    root = tmp_path / "embeddings"
    write_blob_store(root, model="strong", separation=3.0)
    write_blob_store(root, model="weak", separation=0.3)
    return root
