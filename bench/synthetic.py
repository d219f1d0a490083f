"""Synthetic embeddings as hard as real ones, and stores of them written through the real writer.

Isotropic Gaussian blobs flatter a solver: L-BFGS converges in ten steps on them. Real
embeddings are correlated and ill-conditioned, so here every row is a latent vector (class
signal plus unit noise) mixed through a random orthogonal basis with singular values k^-0.5
(k = 1..D) and offset from zero; StandardScaler rescales each feature but cannot undo the
mixing, so the standardised covariance keeps a spread of three orders of magnitude.

The seed study's datasets at their real sizes and label structure (class balance from the
published counts; CheXpert's 14 label prevalences and uncertain labels masked as unknown):
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medprobe.cache import RowTable, StoreSpec, StoreWriter, store_path


@dataclass(frozen=True)
class DatasetShape:
    """A dataset's size and labels: class frequencies (single-label) or label prevalences and
    the share of unknown labels (multi-label)."""

    name: str
    n_train: int
    n_val: int
    n_test: int
    kind: str  # multiclass | ordinal | binary | multilabel
    headline: str
    class_frequencies: tuple[float, ...] = ()
    prevalences: tuple[float, ...] = ()
    unknown: float = 0.0

    @property
    def n_rows(self) -> int:
        return self.n_train + self.n_val + self.n_test


CHEXPERT_PREVALENCE = (0.09, 0.05, 0.12, 0.47, 0.04, 0.23, 0.07, 0.03, 0.15, 0.09, 0.38, 0.02)
SEED_STUDY = (
    # ISIC 2019: 25,331 images, 80/10/10; MEL NV BCC AK BKL DF VASC SCC.
    DatasetShape(
        "isic2019",
        20_265,
        2_533,
        2_533,
        "multiclass",
        "balanced_accuracy",
        class_frequencies=(0.18, 0.51, 0.13, 0.03, 0.10, 0.01, 0.01, 0.03),
    ),
    # APTOS 2019: 3,662 fundus photographs, 70/15/15, five grades.
    DatasetShape(
        "aptos2019",
        2_563,
        549,
        550,
        "ordinal",
        "quadratic_kappa",
        class_frequencies=(0.49, 0.10, 0.27, 0.05, 0.09),
    ),
    # CBIS-DDSM whole images: 3,103, official test 645, val 10 % of train; benign / malignant.
    DatasetShape("cbis_ddsm", 2_212, 246, 645, "binary", "roc_auc", class_frequencies=(0.6, 0.4)),
    # CheXpert: 223,648 train images, val 10 % of them; the official valid set (234) as test.
    DatasetShape(
        "chexpert",
        201_234,
        22_414,
        234,
        "multilabel",
        "mean_auroc",
        prevalences=(*CHEXPERT_PREVALENCE, 0.04, 0.52),
        unknown=0.1,
    ),
)


def mixing_basis(rng: np.random.Generator, dim: int) -> np.ndarray:
    """(D, D) float32: singular values k^-0.5 through a random orthogonal basis."""
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return ((np.arange(1, dim + 1) ** -0.5)[:, None] * basis).astype(np.float32)


def conditioned(
    rng: np.random.Generator, signal: np.ndarray, mixing: np.ndarray, offset: np.ndarray
) -> np.ndarray:
    """(N, D) float32 rows: (signal + unit Gaussian noise) @ mixing + offset."""
    latent = rng.standard_normal(signal.shape, dtype=np.float32)
    latent += signal
    embeddings = latent @ mixing
    embeddings += offset
    return embeddings


def draw_labels(shape: DatasetShape, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) int64, or (N, L) int8 with their known mask (N, L) bool."""
    if shape.kind != "multilabel":
        return rng.choice(
            len(shape.class_frequencies), shape.n_rows, p=shape.class_frequencies
        ), None
    prevalence = np.asarray(shape.prevalences)
    labels = (rng.random((shape.n_rows, len(prevalence))) < prevalence).astype(np.int8)
    return labels, rng.random(labels.shape) >= shape.unknown


def write_dataset(
    root: Path,
    shape: DatasetShape,
    separations: dict[str, float],
    *,
    dim: int,
    seed: int = 0,
    chunk_rows: int = 32_768,
    on_store: Callable[[str], None] | None = None,
    metadata: bool = False,
) -> None:
    """One store per model of `separations` (model -> scale of the class signal), all with the
    same ids, labels and splits, written chunk by chunk (never the whole split in memory).
    `metadata`: also sex (F/M, 3 % missing) and age (18-90) per image, as ISIC's CSV has."""
    rng = np.random.default_rng(seed)
    labels, known = draw_labels(shape, rng)
    splits = ["train"] * shape.n_train + ["val"] * shape.n_val + ["test"] * shape.n_test
    columns = None
    if metadata:
        side = np.random.default_rng([seed, 99])
        sex = np.where(side.random(shape.n_rows) < 0.5, "F", "M")
        sex[side.random(shape.n_rows) < 0.03] = ""
        columns = {
            "sex": sex.tolist(),
            "age": side.integers(18, 91, shape.n_rows).astype(str).tolist(),
        }
    rows = RowTable(
        ids=[f"{shape.name}/img{i:07d}.png" for i in range(shape.n_rows)],
        splits=splits,
        labels=labels,
        label_mask=known,
        metadata=columns,
    )
    n_signals = len(shape.prevalences) or len(shape.class_frequencies)
    directions = rng.normal(size=(n_signals, dim)).astype(np.float32)
    names = [f"finding{j}" for j in range(n_signals)]
    task = {"kind": shape.kind, "headline_metric": shape.headline, "label_names": names}
    for index, (model, separation) in enumerate(separations.items()):
        model_rng = np.random.default_rng([seed, index])
        mixing = mixing_basis(model_rng, dim)
        offset = model_rng.normal(size=dim).astype(np.float32)
        spec = StoreSpec(
            dataset={"name": shape.name, "fingerprint": rows.fingerprint()},
            model={"name": model},
            preprocessing={},
            poolings=("cls",),
            task=task,
        )
        with StoreWriter(store_path(root, spec), spec, rows, flush_rows=chunk_rows) as writer:
            for start in range(0, shape.n_rows, chunk_rows):
                part = labels[start : start + chunk_rows]
                signal = (
                    part.astype(np.float32) @ directions
                    if shape.kind == "multilabel"
                    else directions[part]
                )
                signal *= separation
                embeddings = conditioned(model_rng, signal, mixing, offset)
                writer.append(start, np.ones(len(part), bool), {"cls": embeddings})
            writer.finish()
        if on_store is not None:
            on_store(model)
