"""Stores of Gaussian-blob embeddings with known separability, written through the real writer."""

import zlib
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
    metadata: dict[str, list[str]] | None = None,
) -> Path:
    """Class means at distance ~`separation` apart plus unit noise; the same ids and labels for
    every model of a dataset (they come from `seed`), embeddings differ by model. `metadata`:
    column -> one str per row in id order ('' missing)."""
    rng = np.random.default_rng(seed)
    n_rows = n_train + n_val + n_test
    splits = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
    ids = np.array([f"case{i:04d}.png" for i in range(n_rows)])
    if n_labels:
        labels = rng.integers(0, 2, (n_rows, n_labels)).astype(np.int8)
        mask = rng.random((n_rows, n_labels)) > 0.1
        signal = labels.astype(float) @ rng.normal(size=(n_labels, dim))
        label_names = [f"finding{j}" for j in range(n_labels)]
    else:
        labels = rng.integers(0, n_classes, n_rows)
        mask = None
        signal = rng.normal(size=(n_classes, dim))[labels]
        label_names = [f"class{c}" for c in range(n_classes)]
    model_rng = np.random.default_rng(
        zlib.crc32(model.encode()) if noise_seed is None else noise_seed
    )
    embeddings = (separation * signal + model_rng.normal(size=(n_rows, dim))).astype(np.float32)
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
    spec = StoreSpec(
        dataset={"name": dataset, "fingerprint": rows.fingerprint()},
        model={"name": model},
        preprocessing={"shuffle": shuffle_rows, **(preprocessing or {})},
        poolings=("cls",),
        task=task,
    )
    path = store_path(root, spec)
    with StoreWriter(path, spec, rows, flush_rows=1) as writer:
        if not complete:  # an extraction that stopped half way: a journal, no published store
            half = n_rows // 2
            writer.append(0, np.ones(half, bool), {"cls": embeddings[order][:half]})
            return path
        writer.append(0, np.ones(n_rows, bool), {"cls": embeddings[order]})
        writer.finish()
    return path


@pytest.fixture
def blob_root(tmp_path) -> Path:
    """Two models of one dataset: 'strong' separates the classes far better than 'weak'."""
    root = tmp_path / "embeddings"
    write_blob_store(root, model="strong", separation=3.0)
    write_blob_store(root, model="weak", separation=0.3)
    return root
