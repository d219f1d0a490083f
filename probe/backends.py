"""Where probes run: batched torch (CPU or GPU), or one estimator fit at a time (scikit-learn on
CPU, cuML on GPU). All backends share one protocol, so their numbers agree.

Protocol for logistic regression on a support set S (rows of the train split):
- every class in S has >= 2 images: C from `C_GRID` by the mean held-out log-loss of a
  stratified k-fold split of S (k = min(5, smallest class count), folds shuffled with the seed);
- a full budget with a val split: C by log-loss on val (a full budget without one: as above);
- otherwise `DEFAULT_C`. Test rows never enter S or the choice of C.
A multi-label store is one binary problem per label, each on the rows where its label is known,
with its own C; the torch backend solves all labels together.

Why log-loss and not accuracy: a few-shot fold holds 2-50 images, so accuracy ties across most of
the grid (every C scores 1.0 on an easy task) and a tie rule, not the data, picks C; and at small
C the logits of all classes are nearly equal, so which C wins a tie flips with float rounding.
Log-loss is a proper score that is never flat across the grid, and it is what the fit minimises.
Exact ties (within `C_TIE`) go to the smaller C (stronger regularisation).

At the full budget the torch backend fits every C of the grid, for every label, in one chunked,
preconditioned solve over the train rows (`probe.full_logistic`), and the fit at the chosen C is
the final model: the same model scikit-learn fits at that C, with no second fit. Nothing is
approximated: C is chosen on the whole train split, and each fit stops on scikit-learn's own
criterion (the largest entry of the same objective's gradient below 1e-4).

Every final fit leaves a `FitReport` in `backend.fit_reports` (iterations, final gradient, why
it stopped); a fit that used up `max_iter` did not converge, and the sweep warns about it.
"""

import importlib.util
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sklearn.model_selection import StratifiedKFold

from medprobe.cache.errors import ToolkitError
from medprobe.probe.full_logistic import fit_heads, mean_log_loss
from medprobe.probe.lbfgs import STOP_REASONS
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

    train (N, D) float32; train_labels (N,) int64 class indices, or (N, L) int8 for a
    multi-label store (one binary label per column, -1 where unknown; logistic regression
    only); supports: one array of train-row indices per seed; test (M, D); val (V, D) and
    val_labels (shaped like train_labels), or None; seeds: the seed of each support.
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

    @property
    def multilabel(self) -> bool:
        return self.train_labels.ndim == 2


@dataclass(frozen=True)
class FitReport:
    """How the final logistic-regression fit of one (seed, label) ended.

    label: the column of a multi-label store's labels as passed in, None for single-label;
    max_gradient: the largest entry of the objective's gradient at the end (NaN where the
    backend does not say); stop: one of `lbfgs.STOP_REASONS` ('max_iter': not converged);
    selection_unconverged: how many fits made to choose C used up max_iter.
    """

    seed: int
    label: int | None
    c: float
    iterations: int
    max_gradient: float
    stop: str
    selection_unconverged: int = 0

    @property
    def converged(self) -> bool:
        return self.stop != "max_iter"


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
    """The C of `C_GRID` with the lowest held-out loss; near-ties go to the smaller C. A grid
    with no held-out rows at all (every loss NaN) falls back to `DEFAULT_C`."""
    losses = np.nan_to_num(np.asarray(losses, dtype=float), nan=np.inf)
    if not np.isfinite(losses).any():
        return DEFAULT_C
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


def _heads(inputs: ProbeInputs, support: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, labels) per label of one support set: the rows where that label is known and its
    0/1 values for a multi-label store; the support and its classes otherwise."""
    if not inputs.multilabel:
        return [(support, inputs.train_labels[support])]
    heads = []
    for column in range(inputs.train_labels.shape[1]):
        values = inputs.train_labels[support, column]
        heads.append((support[values >= 0], values[values >= 0].astype(np.int64)))
    return heads


def _binary_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, L) int8 with -1 unknown -> 0/1 targets (N, L) int64 and the known mask (or None)."""
    known = labels >= 0
    return np.clip(labels, 0, 1).astype(np.int64), None if known.all() else known


class TorchBackend:
    """Many fits in one batched solve; CUDA when present."""

    def __init__(self) -> None:
        import torch

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.fit_reports: list[FitReport] = []

    def _tensor(self, values: np.ndarray) -> "torch.Tensor":
        """A float32 tensor on the device; on the CPU a float32 array is shared, not copied."""
        import torch

        return torch.as_tensor(values, dtype=torch.float32, device=self.device)

    def _index(self, values: np.ndarray | None) -> "torch.Tensor | None":
        """Integer or boolean arrays (targets, masks) on the device; None stays None."""
        import torch

        return None if values is None else torch.as_tensor(values, device=self.device)

    def _pool_rows(self, support: np.ndarray, n_rows: int) -> "np.ndarray | None":
        """The support's rows in order, or None when it is every row of the pool: a full budget
        then reads the pool in place (the order of rows changes no probe's result)."""
        rows = np.sort(support)
        if len(rows) == n_rows and rows[0] == 0 and rows[-1] == n_rows - 1:
            return None
        return rows

    def _fit(self, pool, problems, n_classes, max_iter):
        """fit_logistic over chunks whose distinct row sets fit in BATCH_FLOATS (a C grid over
        one fold shares its features); returns ((weights (D, K), bias (K,)) per problem,
        (iterations, gradient size, stop) per problem)."""
        dim = pool.shape[1]
        fits, records = [], []
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
            records += zip(
                fit.iterations.tolist(),
                fit.gradient_size.tolist(),
                fit.stop.tolist(),
                strict=True,
            )
            start = stop
        return fits, records

    def _held_out_log_loss(self, pool, fits, held_out, held_out_labels) -> np.ndarray:
        """Mean log-loss of fit b on rows held_out[b] with labels held_out_labels[b], all
        problems in one batched product."""
        import torch

        n_max = max(len(rows) for rows in held_out)
        index = torch.zeros(len(held_out), n_max, dtype=torch.long, device=self.device)
        truth = torch.zeros(len(held_out), n_max, dtype=torch.long, device=self.device)
        valid = torch.zeros(len(held_out), n_max, dtype=torch.bool, device=self.device)
        for b, (rows, labels) in enumerate(zip(held_out, held_out_labels, strict=True)):
            index[b, : len(rows)] = torch.as_tensor(rows, device=self.device)
            truth[b, : len(rows)] = torch.as_tensor(labels, device=self.device)
            valid[b, : len(rows)] = True
        weights = torch.stack([w for w, _ in fits])
        bias = torch.stack([b for _, b in fits])
        probabilities = torch.softmax(pool[index] @ weights + bias[:, None, :], dim=2)
        losses = -torch.log(probabilities.gather(2, truth[..., None])[..., 0].clamp_min(P_FLOOR))
        return as_numpy((losses * valid).sum(1) / valid.sum(1))

    def logreg(self, inputs: ProbeInputs, *, max_iter: int = MAX_ITER) -> list[np.ndarray]:
        """Test probabilities per support set: (M, K) per class, or (M, L) of each label's
        positive class for a multi-label store."""
        warn_if_no_val(inputs)
        if inputs.use_val:
            return [
                self._full_logreg(inputs, support, seed, max_iter)
                for support, seed in zip(inputs.supports, inputs.seeds, strict=True)
            ]
        return self._few_shot_logreg(inputs, max_iter)

    def _few_shot_logreg(self, inputs: ProbeInputs, max_iter: int) -> list[np.ndarray]:
        """Every (support, label, fold, C) of a budget in one batched solve, then one final fit
        per (support, label) at its chosen C."""
        import torch

        pool = self._tensor(inputs.train)
        n_classes = 2 if inputs.multilabel else inputs.n_classes
        heads = [_heads(inputs, support) for support in inputs.supports]
        problems, owners = [], []
        for s, seed in enumerate(inputs.seeds):
            for h, (rows, labels) in enumerate(heads[s]):
                for fit_part, held_out in cv_folds(labels, seed) or []:
                    for c in C_GRID:
                        problems.append(LinearProblem(rows[fit_part], labels[fit_part], c))
                        owners.append((s, h, c, rows[held_out], labels[held_out]))
        chosen = {(s, h): DEFAULT_C for s in range(len(heads)) for h in range(len(heads[s]))}
        unconverged = dict.fromkeys(chosen, 0)
        if problems:
            fits, records = self._fit(pool, problems, n_classes, max_iter)
            losses = self._held_out_log_loss(
                pool, fits, [o[3] for o in owners], [o[4] for o in owners]
            )
            per_c: dict[tuple[int, int, float], list[float]] = {}
            for (s, h, c, _, _), loss, record in zip(owners, losses, records, strict=True):
                per_c.setdefault((s, h, c), []).append(float(loss))
                unconverged[(s, h)] += STOP_REASONS[record[2]] == "max_iter"
            for s, h in chosen:
                if (s, h, C_GRID[0]) in per_c:
                    chosen[(s, h)] = best_c([np.mean(per_c[(s, h, c)]) for c in C_GRID])
        keys = list(chosen)
        final = [LinearProblem(*heads[s][h], chosen[(s, h)]) for s, h in keys]
        fits, records = self._fit(pool, final, n_classes, max_iter)
        test = self._tensor(inputs.test)
        # Every final model against the test rows in one product.
        logits = test @ torch.cat([w for w, _ in fits], dim=1) + torch.cat([b for _, b in fits])
        probabilities = torch.softmax(logits.view(len(test), len(fits), n_classes), dim=2)
        per_support: list[list[np.ndarray]] = [[] for _ in heads]
        for f, ((s, h), record) in enumerate(zip(keys, records, strict=True)):
            scores = as_numpy(probabilities[:, f])
            per_support[s].append(scores[:, 1] if inputs.multilabel else scores)
            iterations, gradient, stop = record
            self.fit_reports.append(
                FitReport(
                    inputs.seeds[s],
                    h if inputs.multilabel else None,
                    chosen[(s, h)],
                    iterations,
                    gradient,
                    STOP_REASONS[stop],
                    unconverged[(s, h)],
                )
            )
        if inputs.multilabel:
            return [np.stack(columns, axis=1) for columns in per_support]
        return [columns[0] for columns in per_support]

    def _full_logreg(
        self, inputs: ProbeInputs, support: np.ndarray, seed: int, max_iter: int
    ) -> np.ndarray:
        """Every C (and every label) on all support rows in one chunked solve; C by val
        log-loss, or by cross-validation folds solved as further heads when there is no val."""
        import torch

        pool = self._tensor(inputs.train)
        rows = self._pool_rows(support, len(pool))
        features = pool if rows is None else pool[torch.as_tensor(rows, device=self.device)]
        labels = inputs.train_labels if rows is None else inputs.train_labels[rows]
        if inputs.multilabel:
            targets, known = _binary_targets(labels)
            n_classes = 2
        else:
            targets, known = labels.astype(np.int64)[:, None], None
            n_classes = inputs.n_classes
        n_heads = targets.shape[1]
        solve = dict(n_classes=n_classes, max_iter=max_iter)
        if inputs.val is not None:
            fit = fit_heads(features, self._index(targets), self._index(known), C_GRID, **solve)
            if inputs.multilabel:
                val_targets, val_known = _binary_targets(inputs.val_labels)
            else:
                val_targets, val_known = inputs.val_labels.astype(np.int64)[:, None], None
            losses = mean_log_loss(
                fit,
                self._tensor(inputs.val),
                self._index(val_targets),
                self._index(val_known),
                floor=P_FLOOR,
            ).reshape(len(C_GRID), n_heads)
            chosen = [best_c(losses[:, h]) for h in range(n_heads)]
            final = fit
            final_problems = [C_GRID.index(c) * n_heads + h for h, c in enumerate(chosen)]
            reached = (fit.minimum.stop == STOP_REASONS.index("max_iter")).view(-1, n_heads)
            unconverged = [
                int(reached[:, h].sum()) - int(reached[C_GRID.index(c), h])
                for h, c in enumerate(chosen)
            ]
        else:
            chosen, unconverged = self._full_cross_validation(features, targets, known, seed, solve)
            final = fit_heads(
                features, self._index(targets), self._index(known), np.array([chosen]), **solve
            )
            final_problems = list(range(n_heads))
        scores = as_numpy(final.probabilities(self._tensor(inputs.test), final_problems))
        for h, problem in enumerate(final_problems):
            self.fit_reports.append(
                FitReport(
                    seed,
                    h if inputs.multilabel else None,
                    chosen[h],
                    int(final.minimum.iterations[problem]),
                    float(final.minimum.gradient_size[problem]),
                    final.minimum.reason(problem),
                    int(unconverged[h]),
                )
            )
        return scores[:, :, 1] if inputs.multilabel else scores[:, 0]

    def _full_cross_validation(self, features, targets, known, seed, solve):
        """C per label by stratified k-fold log-loss on the support rows, every (fold, label)
        a head of one solve; returns (C per label, fits of the grid that used up max_iter)."""
        import torch

        n_rows, n_heads = targets.shape
        known = np.ones((n_rows, n_heads), bool) if known is None else known
        head_targets, fit_masks, held_masks, owner = [], [], [], []
        for h in range(n_heads):
            rows = np.flatnonzero(known[:, h])
            for fit_part, held_out in cv_folds(targets[rows, h], seed) or []:
                fit_mask = np.zeros(n_rows, bool)
                fit_mask[rows[fit_part]] = True
                held_mask = np.zeros(n_rows, bool)
                held_mask[rows[held_out]] = True
                head_targets.append(targets[:, h])
                fit_masks.append(fit_mask)
                held_masks.append(held_mask)
                owner.append(h)
        chosen, unconverged = [DEFAULT_C] * n_heads, [0] * n_heads
        if not owner:
            return chosen, unconverged
        stacked_targets = torch.as_tensor(np.stack(head_targets, 1), device=self.device)
        fit = fit_heads(
            features,
            stacked_targets,
            torch.as_tensor(np.stack(fit_masks, 1), device=self.device),
            C_GRID,
            **solve,
        )
        losses = mean_log_loss(
            fit,
            features,
            stacked_targets,
            torch.as_tensor(np.stack(held_masks, 1), device=self.device),
            floor=P_FLOOR,
        ).reshape(len(C_GRID), len(owner))
        reached = as_numpy(fit.minimum.stop == STOP_REASONS.index("max_iter")).reshape(
            len(C_GRID), len(owner)
        )
        owner = np.array(owner)
        for h in np.unique(owner):
            chosen[h] = best_c(losses[:, owner == h].mean(1))
            unconverged[h] = int(reached[:, owner == h].sum())
        return chosen, unconverged

    def _support_sets(self, inputs: ProbeInputs):
        """The pool and (rows or None, labels) per support set, rows sorted."""
        import torch

        pool = self._tensor(inputs.train)
        labels = torch.as_tensor(inputs.train_labels, device=self.device)
        sets = []
        for support in inputs.supports:
            rows = self._pool_rows(support, len(pool))
            if rows is None:
                sets.append((None, labels))
            else:
                index = torch.as_tensor(rows, device=self.device)
                sets.append((index, labels[index]))
        return pool, sets

    def knn(self, inputs: ProbeInputs, *, k: int, vote: str) -> list[np.ndarray]:
        pool, sets = self._support_sets(inputs)
        scores = knn_scores(pool, sets, self._tensor(inputs.test), inputs.n_classes, k=k, vote=vote)
        return [as_numpy(s) for s in scores]

    def prototype(self, inputs: ProbeInputs) -> list[np.ndarray]:
        pool, sets = self._support_sets(inputs)
        scores = prototype_scores(pool, sets, self._tensor(inputs.test), inputs.n_classes)
        return [as_numpy(s) for s in scores]


class EstimatorBackend:
    """One estimator fit at a time: scikit-learn, or cuML's drop-in classes on a GPU.

    This is also the reference the batched backend is checked against (tests, `make bench`).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.fit_reports: list[FitReport] = []
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
        """Probabilities (M, K) of x_eval, and the iterations the solver took."""
        from sklearn.preprocessing import StandardScaler

        logistic_regression, _ = self._classes()
        scaler = StandardScaler().fit(x_fit)
        model = logistic_regression(C=c, max_iter=max_iter).fit(scaler.transform(x_fit), y_fit)
        probabilities = np.zeros((len(x_eval), n_classes), dtype=np.float32)
        probabilities[:, np.asarray(model.classes_, dtype=int)] = model.predict_proba(
            scaler.transform(x_eval)
        )
        return probabilities, int(np.max(getattr(model, "n_iter_", 0)))

    def logreg(self, inputs: ProbeInputs, *, max_iter: int = MAX_ITER) -> list[np.ndarray]:
        """As `TorchBackend.logreg`; a multi-label store is one fit per label, in turn."""
        warn_if_no_val(inputs)
        if not inputs.multilabel:
            return self._logreg(inputs, None, max_iter)
        columns = []
        for column in range(inputs.train_labels.shape[1]):
            labels = inputs.train_labels[:, column]
            val_known = None if inputs.val is None else inputs.val_labels[:, column] >= 0
            binary = ProbeInputs(
                train=inputs.train,
                train_labels=np.clip(labels, 0, 1).astype(np.int64),
                supports=[support[labels[support] >= 0] for support in inputs.supports],
                seeds=inputs.seeds,
                test=inputs.test,
                n_classes=2,
                val=None if inputs.val is None else inputs.val[val_known],
                val_labels=None
                if inputs.val is None
                else inputs.val_labels[val_known, column].astype(np.int64),
                use_val=inputs.use_val,
            )
            columns.append([scores[:, 1] for scores in self._logreg(binary, column, max_iter)])
        return [np.stack(per_label, axis=1) for per_label in zip(*columns, strict=True)]

    def _logreg(self, inputs: ProbeInputs, label: int | None, max_iter: int) -> list[np.ndarray]:
        x, y, k = inputs.train, inputs.train_labels, inputs.n_classes
        results = []
        for support, seed in zip(inputs.supports, inputs.seeds, strict=True):
            c_best, selection_unconverged = DEFAULT_C, 0
            if inputs.use_val and inputs.val is not None:
                losses = []
                for c in C_GRID:
                    probabilities, iterations = self._fit_predict(
                        x[support], y[support], c, inputs.val, k, max_iter
                    )
                    losses.append(log_loss(probabilities, inputs.val_labels))
                    selection_unconverged += iterations >= max_iter
                c_best = best_c(losses)
            elif (folds := cv_folds(y[support], seed)) is not None:
                means = []
                for c in C_GRID:
                    fold_scores = []
                    for fit_part, held_out in folds:
                        rows, rows_out = support[fit_part], support[held_out]
                        probabilities, iterations = self._fit_predict(
                            x[rows], y[rows], c, x[rows_out], k, max_iter
                        )
                        fold_scores.append(log_loss(probabilities, y[rows_out]))
                        selection_unconverged += iterations >= max_iter
                    means.append(np.mean(fold_scores))
                c_best = best_c(means)
            probabilities, iterations = self._fit_predict(
                x[support], y[support], c_best, inputs.test, k, max_iter
            )
            results.append(probabilities)
            self.fit_reports.append(
                FitReport(
                    seed,
                    label,
                    c_best,
                    iterations,
                    float("nan"),
                    "max_iter" if iterations >= max_iter else "gradient",
                    int(selection_unconverged),
                )
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
