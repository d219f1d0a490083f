"""Where probes run: batched torch (CPU or GPU), or one estimator fit at a time (scikit-learn on
CPU, cuML on GPU). All backends share one protocol, so their numbers agree.

Protocol for logistic regression on a support set S (rows of the train split):
- every class in S has >= 2 images: C from `C_GRID` by the mean held-out log-loss of a
  stratified k-fold split of S (k = min(5, smallest class count), folds shuffled with the seed);
- a full budget with a val split: C by log-loss on val (a full budget without one: as above);
- otherwise `DEFAULT_C`. Test rows never enter S or the choice of C.

Why log-loss and not accuracy: a few-shot fold holds 2-50 images, so accuracy ties across most of
the grid (every C scores 1.0 on an easy task) and a tie rule, not the data, picks C; and at small
C the logits of all classes are nearly equal, so which C wins a tie flips with float rounding.
Log-loss is a proper score that is never flat across the grid, and it is what the fit minimises.
Exact ties (within `C_TIE`) go to the smaller C (stronger regularisation).
"""

import importlib.util
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.model_selection import StratifiedKFold

from medprobe.cache.errors import ToolkitError
from medprobe.probe.logistic import (
    C_GRID,
    CV_FOLDS,
    DEFAULT_C,
    MAX_ITER,
    LinearProblem,
    fit_logistic,
)
from medprobe.probe.neighbors import KNN_TEMPERATURE, as_numpy, knn_scores, prototype_scores

if TYPE_CHECKING:  # torch is imported inside functions: `import medprobe.probe` stays light
    import torch

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "sklearn", "cuml")
P_FLOOR = 1e-15  # probabilities are clipped here before the log, as sklearn's log_loss does
C_TIE = 1e-6  # held-out losses closer than this are a tie
# Upper bound on floats held per batched solve for its distinct row sets (features,
# standardised copy, Gram), about 0.5 GB.
BATCH_FLOATS = 128_000_000


@dataclass(frozen=True)
class ProbeInputs:
    """One (store, pooling, budget) step: the pool of train rows and the support sets per seed.

    train (N, D) float32, train_labels (N,) int64; supports: one array of train-row indices per
    seed; test (M, D); val (V, D) and val_labels, or None; seeds: the seed of each support.
    """

    train: np.ndarray
    train_labels: np.ndarray
    supports: list[np.ndarray]
    seeds: list[int]
    test: np.ndarray
    n_classes: int
    val: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    use_val: bool = False


def cv_folds(labels: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Stratified folds over a support set's labels, or None if a class has < 2 images."""
    counts = np.bincount(labels)
    smallest = counts[counts > 0].min()
    if smallest < 2:
        return None
    splitter = StratifiedKFold(
        n_splits=min(CV_FOLDS, int(smallest)), shuffle=True, random_state=seed
    )
    return list(splitter.split(np.zeros(len(labels)), labels))


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class; probabilities (N, K), labels (N,) int."""
    picked = probabilities[np.arange(len(labels)), labels].astype(np.float64)
    return float(-np.log(np.maximum(picked, P_FLOOR)).mean())


def best_c(losses: "list[float] | np.ndarray") -> float:
    """The C of `C_GRID` with the lowest held-out loss; near-ties go to the smaller C."""
    losses = np.asarray(losses, dtype=float)
    return C_GRID[int(np.flatnonzero(losses <= losses.min() + C_TIE)[0])]


def warn_if_no_val(inputs: ProbeInputs) -> None:
    if inputs.use_val and inputs.val is None:
        logger.warning(
            "full budget but the store has no val split: C is chosen by cross-validation on "
            "the train split instead"
        )


def resolve_backend(name: str) -> "TorchBackend | EstimatorBackend":
    if name not in BACKENDS:
        raise ToolkitError(f"--backend {name!r}: choose one of {list(BACKENDS)}")
    if name in ("auto", "torch"):
        return TorchBackend()
    return EstimatorBackend(name)


class TorchBackend:
    """Many fits in one batched solve; CUDA when present."""

    def __init__(self) -> None:
        import torch

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _tensor(self, values: np.ndarray) -> "torch.Tensor":
        import torch

        return torch.as_tensor(values, dtype=torch.float32, device=self.device)

    def _fit(self, pool, problems, n_classes, max_iter):
        """fit_logistic over chunks whose distinct row sets fit in BATCH_FLOATS (a C grid over
        one fold shares its features); returns (weights (D, K), bias (K,)) per problem."""
        dim = pool.shape[1]
        fits = []
        start = 0
        while start < len(problems):
            stop, held, previous = start, 0, None
            while stop < len(problems):
                rows = problems[stop].rows
                new_set = previous is None or not np.array_equal(rows, previous)
                cost = len(rows) * dim * 3 if new_set else 0
                if stop > start and held + cost > BATCH_FLOATS:
                    break
                held, previous, stop = held + cost, rows, stop + 1
            fit = fit_logistic(pool, problems[start:stop], n_classes, max_iter=max_iter)
            fits += [(fit.weights[b], fit.bias[b]) for b in range(stop - start)]
            start = stop
        return fits

    def _held_out_log_loss(self, pool, fits, held_out, labels) -> np.ndarray:
        """Mean log-loss of fit b on rows held_out[b], all problems in one batched product."""
        import torch

        n_max = max(len(rows) for rows in held_out)
        index = torch.zeros(len(held_out), n_max, dtype=torch.long, device=self.device)
        valid = torch.zeros(len(held_out), n_max, dtype=torch.bool, device=self.device)
        for b, rows in enumerate(held_out):
            index[b, : len(rows)] = torch.as_tensor(rows, device=self.device)
            valid[b, : len(rows)] = True
        weights = torch.stack([w for w, _ in fits])
        bias = torch.stack([b for _, b in fits])
        probabilities = torch.softmax(pool[index] @ weights + bias[:, None, :], dim=2)
        truth = torch.as_tensor(labels, device=self.device)[index]
        losses = -torch.log(probabilities.gather(2, truth[..., None])[..., 0].clamp_min(P_FLOOR))
        return as_numpy((losses * valid).sum(1) / valid.sum(1))

    def logreg(self, inputs: ProbeInputs, *, max_iter: int = MAX_ITER) -> list[np.ndarray]:
        """Test class probabilities (M, K) per support set."""
        import torch

        warn_if_no_val(inputs)
        pool = self._tensor(inputs.train)
        labels = inputs.train_labels
        chosen_c = [DEFAULT_C] * len(inputs.supports)
        if inputs.use_val and inputs.val is not None:
            problems = [
                LinearProblem(inputs.supports[0], labels[inputs.supports[0]], c) for c in C_GRID
            ]
            fits = self._fit(pool, problems, inputs.n_classes, max_iter)
            val = self._tensor(inputs.val)
            losses = [
                log_loss(as_numpy(torch.softmax(val @ w + b, dim=1)), inputs.val_labels)
                for w, b in fits
            ]
            chosen_c = [best_c(losses)] * len(inputs.supports)
        else:
            problems, owners = [], []
            for s, (support, seed) in enumerate(zip(inputs.supports, inputs.seeds, strict=True)):
                folds = cv_folds(labels[support], seed)
                for fold, (fit_part, held_out) in enumerate(folds or []):
                    for c in C_GRID:
                        problems.append(
                            LinearProblem(support[fit_part], labels[support[fit_part]], c)
                        )
                        owners.append((s, fold, c, support[held_out]))
            if problems:
                fits = self._fit(pool, problems, inputs.n_classes, max_iter)
                losses = self._held_out_log_loss(pool, fits, [o[3] for o in owners], labels)
                per_c: dict[tuple[int, float], list[float]] = {}
                for (s, _, c, _), loss in zip(owners, losses, strict=True):
                    per_c.setdefault((s, c), []).append(float(loss))
                for s in range(len(inputs.supports)):
                    if (s, C_GRID[0]) in per_c:
                        chosen_c[s] = best_c([np.mean(per_c[(s, c)]) for c in C_GRID])
        final = [
            LinearProblem(support, labels[support], c)
            for support, c in zip(inputs.supports, chosen_c, strict=True)
        ]
        test = self._tensor(inputs.test)
        return [
            as_numpy(torch.softmax(test @ w + b, dim=1))
            for w, b in self._fit(pool, final, inputs.n_classes, max_iter)
        ]

    def _support_sets(self, inputs: ProbeInputs):
        import torch

        pool = self._tensor(inputs.train)
        labels = torch.as_tensor(inputs.train_labels, device=self.device)
        rows = [torch.as_tensor(s, device=self.device) for s in inputs.supports]
        return [(pool[r], labels[r]) for r in rows]

    def knn(self, inputs: ProbeInputs, *, k: int, vote: str) -> list[np.ndarray]:
        scores = knn_scores(
            self._support_sets(inputs), self._tensor(inputs.test), inputs.n_classes, k=k, vote=vote
        )
        return [as_numpy(s) for s in scores]

    def prototype(self, inputs: ProbeInputs) -> list[np.ndarray]:
        scores = prototype_scores(
            self._support_sets(inputs), self._tensor(inputs.test), inputs.n_classes
        )
        return [as_numpy(s) for s in scores]


class EstimatorBackend:
    """One estimator fit at a time: scikit-learn, or cuML's drop-in classes on a GPU.

    This is also the reference the batched backend is checked against (tests, `make bench`).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "cuml" and importlib.util.find_spec("cuml") is None:
            raise ToolkitError(
                "--backend cuml needs RAPIDS cuML on a CUDA machine: pip install '.[gpu]'"
            )

    def _classes(self):
        if self.name == "cuml":
            from cuml.linear_model import LogisticRegression
            from cuml.neighbors import KNeighborsClassifier
        else:
            from sklearn.linear_model import LogisticRegression
            from sklearn.neighbors import KNeighborsClassifier
        return LogisticRegression, KNeighborsClassifier

    def _fit_predict(self, x_fit, y_fit, c, x_eval, n_classes, max_iter):
        from sklearn.preprocessing import StandardScaler

        logistic_regression, _ = self._classes()
        scaler = StandardScaler().fit(x_fit)
        model = logistic_regression(C=c, max_iter=max_iter).fit(scaler.transform(x_fit), y_fit)
        probabilities = np.zeros((len(x_eval), n_classes), dtype=np.float32)
        probabilities[:, np.asarray(model.classes_, dtype=int)] = model.predict_proba(
            scaler.transform(x_eval)
        )
        return probabilities

    def logreg(self, inputs: ProbeInputs, *, max_iter: int = MAX_ITER) -> list[np.ndarray]:
        warn_if_no_val(inputs)
        x, y, k = inputs.train, inputs.train_labels, inputs.n_classes
        results = []
        for support, seed in zip(inputs.supports, inputs.seeds, strict=True):
            c_best = DEFAULT_C
            if inputs.use_val and inputs.val is not None:
                losses = [
                    log_loss(
                        self._fit_predict(x[support], y[support], c, inputs.val, k, max_iter),
                        inputs.val_labels,
                    )
                    for c in C_GRID
                ]
                c_best = best_c(losses)
            elif (folds := cv_folds(y[support], seed)) is not None:
                means = []
                for c in C_GRID:
                    fold_scores = []
                    for fit_part, held_out in folds:
                        rows, rows_out = support[fit_part], support[held_out]
                        probabilities = self._fit_predict(
                            x[rows], y[rows], c, x[rows_out], k, max_iter
                        )
                        fold_scores.append(log_loss(probabilities, y[rows_out]))
                    means.append(np.mean(fold_scores))
                c_best = best_c(means)
            results.append(
                self._fit_predict(x[support], y[support], c_best, inputs.test, k, max_iter)
            )
        return results

    def knn(self, inputs: ProbeInputs, *, k: int, vote: str) -> list[np.ndarray]:
        _, k_neighbours = self._classes()

        def dino_weights(distances: np.ndarray) -> np.ndarray:
            return np.exp((1.0 - distances) / KNN_TEMPERATURE)

        results = []
        for support in inputs.supports:
            model = k_neighbours(
                n_neighbors=min(k, len(support)),
                metric="cosine",
                weights=dino_weights if vote == "weighted" else "uniform",
            )
            model.fit(inputs.train[support], inputs.train_labels[support])
            probabilities = np.zeros((len(inputs.test), inputs.n_classes), dtype=np.float32)
            probabilities[:, np.asarray(model.classes_, dtype=int)] = model.predict_proba(
                inputs.test
            )
            results.append(probabilities)
        return results

    def prototype(self, inputs: ProbeInputs) -> list[np.ndarray]:
        results = []
        for support in inputs.supports:
            features = inputs.train[support]
            centre = features.mean(0, keepdims=True)

            def normalise(values: np.ndarray, centre: np.ndarray = centre) -> np.ndarray:
                shifted = values - centre
                return shifted / np.maximum(np.linalg.norm(shifted, axis=1, keepdims=True), 1e-12)

            labels = inputs.train_labels[support]
            prototypes = np.zeros((inputs.n_classes, features.shape[1]), dtype=np.float32)
            present = np.zeros(inputs.n_classes, dtype=bool)
            for c in np.unique(labels):
                prototypes[c] = normalise(features)[labels == c].mean(0)
                present[c] = True
            queries = normalise(inputs.test)
            distances = np.sqrt(((queries[:, None, :] - prototypes[None]) ** 2).sum(-1))
            distances[:, ~present] = np.inf
            logits = -distances - (-distances).max(1, keepdims=True)
            results.append(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
        return results
