"""One estimator fit at a time: scikit-learn on CPU, cuML's drop-in classes on a GPU. The
reference the batched torch backend (`backends.TorchBackend`) is checked against, following the
same protocol (`protocol`)."""

import importlib.util

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.probe.fit.attentive import attentive_scores
from medprobe.probe.fit.logistic import C_GRID, DEFAULT_C, MAX_ITER
from medprobe.probe.fit.neighbors import KNN_TEMPERATURE
from medprobe.probe.fit.protocol import (  # re-exported: the backends' shared vocabulary
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
        shared folds (`probe.fit.protocol`): scaled on all of a fold's rows, fitted on its known
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

    def attentive(self, inputs: ProbeInputs) -> list[np.ndarray]:
        """scikit-learn and cuML have no attentive probe: the torch one runs, on the CPU for
        scikit-learn and on the GPU for cuML, with the same numbers as the torch backend's."""
        return attentive_scores(inputs, inputs.tokens, "cuda" if self.name == "cuml" else "cpu")

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
