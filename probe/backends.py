"""Where probes run: batched torch (CPU or GPU), or one estimator fit at a time (scikit-learn on
CPU, cuML on GPU). All backends follow `probe.protocol`, so their numbers agree.

A few-shot budget is thousands of tiny fits: the torch backend solves every (support set, label,
fold, C) of a budget in one batched L-BFGS (`probe.logistic`). At the full budget it fits every C
of the grid, for every label, in one chunked, preconditioned solve over the train rows
(`probe.full_budget`). k-NN and prototypes read the rows in chunks (`probe.neighbors`).

Every final fit leaves a `FitReport` in `backend.fit_reports` (iterations, final gradient, why
it stopped); a fit that used up `max_iter` did not converge, and the sweep warns about it.
"""

import importlib.util
from typing import TYPE_CHECKING

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.probe.full_budget import full_budget_logreg
from medprobe.probe.lbfgs import STOP_REASONS
from medprobe.probe.logistic import C_GRID, DEFAULT_C, MAX_ITER, LinearProblem, fit_logistic
from medprobe.probe.neighbors import KNN_TEMPERATURE, as_numpy, knn_scores, prototype_scores
from medprobe.probe.protocol import (  # re-exported: the backends' shared vocabulary
    C_TIE,
    P_FLOOR,
    FitReport,
    ProbeInputs,
    best_c,
    cv_folds,
    cv_splits,
    label_inputs,
    log_loss,
    support_heads,
    warn_if_no_val,
)

if TYPE_CHECKING:  # torch is imported inside functions: `import medprobe.probe` stays light
    import torch

__all__ = [
    "BACKENDS",
    "C_TIE",
    "P_FLOOR",
    "EstimatorBackend",
    "FitReport",
    "ProbeInputs",
    "TorchBackend",
    "best_c",
    "cv_folds",
    "log_loss",
    "resolve_backend",
]

BACKENDS = ("auto", "torch", "sklearn", "cuml")
# Upper bound on floats held per batched solve for its distinct row sets (features,
# standardised copy, Gram), about 0.5 GB.
BATCH_FLOATS = 128_000_000


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
        self.fit_reports: list[FitReport] = []

    def _tensor(self, values: np.ndarray) -> "torch.Tensor":
        """A float32 tensor on the device; on the CPU a float32 array is shared, not copied."""
        import torch

        return torch.as_tensor(values, dtype=torch.float32, device=self.device)

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

    def _full_logreg(
        self, inputs: ProbeInputs, support: np.ndarray, seed: int, max_iter: int
    ) -> np.ndarray:
        """One full-budget support: every C and label in one solve over its rows (the pool
        itself, not a copy, when the support is every train row)."""
        import torch

        pool = self._tensor(inputs.train)
        rows = self._pool_rows(support, len(pool))
        scores, reports = full_budget_logreg(
            pool if rows is None else pool[torch.as_tensor(rows, device=self.device)],
            inputs.train_labels if rows is None else inputs.train_labels[rows],
            self._tensor(inputs.test),
            n_classes=inputs.n_classes,
            seed=seed,
            max_iter=max_iter,
            val=None if inputs.val is None else self._tensor(inputs.val),
            val_labels=inputs.val_labels,
        )
        self.fit_reports += reports
        return scores

    def _few_shot_logreg(self, inputs: ProbeInputs, max_iter: int) -> list[np.ndarray]:
        """Every (support, fold, label, C) of a budget in one batched solve, then one final fit
        per (support, label) at its chosen C. A multi-label support's labels share its folds
        and rows (see `probe.protocol`), so each of its folds is one row set for every label."""
        import torch

        pool = self._tensor(inputs.train)
        n_classes = 2 if inputs.multilabel else inputs.n_classes
        heads = [support_heads(inputs, support) for support in inputs.supports]
        problems, owners = [], []
        for s, (support, seed) in enumerate(zip(inputs.supports, inputs.seeds, strict=True)):
            for fit_part, held_out, h in cv_splits(inputs, support, seed):
                labels = heads[s][h][1]
                held_labels = labels[held_out]
                known = held_labels >= 0
                for c in C_GRID:
                    problems.append(LinearProblem(support[fit_part], labels[fit_part], c))
                    owners.append((s, h, c, support[held_out][known], held_labels[known]))
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

    def _support_sets(self, inputs: ProbeInputs):
        """The pool and (rows or None, labels) per support set (rows sorted), and per label
        for a multi-label store: its labels share the support's rows, unknown ones -1."""
        import torch

        pool = self._tensor(inputs.train)
        labels = torch.as_tensor(inputs.train_labels, device=self.device).long()
        sets = []
        for support in inputs.supports:
            rows = self._pool_rows(support, len(pool))
            index = None if rows is None else torch.as_tensor(rows, device=self.device)
            support_labels = labels if index is None else labels[index]
            if inputs.multilabel:
                sets += [(index, column) for column in support_labels.T]
            else:
                sets.append((index, support_labels))
        return pool, sets

    def _per_support(self, inputs: ProbeInputs, scores: "list[torch.Tensor]") -> list[np.ndarray]:
        """Scores per support set: (M, K), or (M, L) positive-class scores per label."""
        if not inputs.multilabel:
            return [as_numpy(s) for s in scores]
        n_labels = inputs.train_labels.shape[1]
        return [
            np.stack([as_numpy(s[:, 1]) for s in scores[i : i + n_labels]], axis=1)
            for i in range(0, len(scores), n_labels)
        ]

    def knn(self, inputs: ProbeInputs, *, k: int, vote: str) -> list[np.ndarray]:
        """Test scores per support set, as `logreg`; a multi-label store's labels share every
        pass over the support rows."""
        pool, sets = self._support_sets(inputs)
        n_classes = 2 if inputs.multilabel else inputs.n_classes
        test = self._tensor(inputs.test)
        return self._per_support(inputs, knn_scores(pool, sets, test, n_classes, k=k, vote=vote))

    def prototype(self, inputs: ProbeInputs) -> list[np.ndarray]:
        """Test scores per support set, as `knn`."""
        pool, sets = self._support_sets(inputs)
        n_classes = 2 if inputs.multilabel else inputs.n_classes
        test = self._tensor(inputs.test)
        return self._per_support(inputs, prototype_scores(pool, sets, test, n_classes))


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
        """Probabilities (M, K) of x_eval, and the iterations the solver took; rows of y_fit
        -1 (a multi-label head's unknowns) are scaled with the rest but left out of the fit."""
        from sklearn.preprocessing import StandardScaler

        logistic_regression, _ = self._classes()
        scaler = StandardScaler().fit(x_fit)
        known = y_fit >= 0
        model = logistic_regression(C=c, max_iter=max_iter).fit(
            scaler.transform(x_fit[known]), y_fit[known]
        )
        probabilities = np.zeros((len(x_eval), n_classes), dtype=np.float32)
        probabilities[:, np.asarray(model.classes_, dtype=int)] = model.predict_proba(
            scaler.transform(x_eval)
        )
        return probabilities, int(np.max(getattr(model, "n_iter_", 0)))

    def _per_label(self, inputs: ProbeInputs, probe) -> list[np.ndarray]:
        """A multi-label store one label at a time: probe(binary inputs, column) per label,
        its positive-class scores stacked into (M, L) per support set."""
        columns = [
            [scores[:, 1] for scores in probe(label_inputs(inputs, column), column)]
            for column in range(inputs.train_labels.shape[1])
        ]
        return [np.stack(per_label, axis=1) for per_label in zip(*columns, strict=True)]

    def logreg(self, inputs: ProbeInputs, *, max_iter: int = MAX_ITER) -> list[np.ndarray]:
        """As `TorchBackend.logreg`; a multi-label store is one fit per label, in turn."""
        warn_if_no_val(inputs)
        if inputs.multilabel and not inputs.use_val:
            return self._multilabel_few_shot_logreg(inputs, max_iter)
        if inputs.multilabel:
            return self._per_label(
                inputs, lambda binary, column: self._logreg(binary, column, max_iter)
            )
        return self._logreg(inputs, None, max_iter)

    def _multilabel_few_shot_logreg(self, inputs: ProbeInputs, max_iter: int) -> list[np.ndarray]:
        """(M, L) positive-class scores per support set, one label at a time on the support's
        shared folds (`probe.protocol`): scaled on all of a fold's rows, fitted on its known
        ones."""
        x = inputs.train
        results = []
        for support, seed in zip(inputs.supports, inputs.seeds, strict=True):
            splits = cv_splits(inputs, support, seed)
            columns = []
            for h, (rows, labels) in enumerate(support_heads(inputs, support)):
                folds = [(fit, held[labels[held] >= 0]) for fit, held, head in splits if head == h]
                c_best, selection_unconverged = DEFAULT_C, 0
                if folds:
                    means = []
                    for c in C_GRID:
                        fold_losses = []
                        for fit, held in folds:
                            probabilities, iterations = self._fit_predict(
                                x[rows[fit]], labels[fit], c, x[rows[held]], 2, max_iter
                            )
                            fold_losses.append(log_loss(probabilities, labels[held]))
                            selection_unconverged += iterations >= max_iter
                        means.append(np.mean(fold_losses))
                    c_best = best_c(means)
                probabilities, iterations = self._fit_predict(
                    x[rows], labels, c_best, inputs.test, 2, max_iter
                )
                columns.append(probabilities[:, 1])
                self.fit_reports.append(
                    FitReport(
                        seed,
                        h,
                        c_best,
                        iterations,
                        float("nan"),
                        "max_iter" if iterations >= max_iter else "gradient",
                        int(selection_unconverged),
                    )
                )
            results.append(np.stack(columns, axis=1))
        return results

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
        if inputs.multilabel:
            return self._per_label(inputs, lambda binary, _: self.knn(binary, k=k, vote=vote))
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
        if inputs.multilabel:
            return self._per_label(inputs, lambda binary, _: self.prototype(binary))
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
