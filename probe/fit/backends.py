"""Where probes run: batched torch (CPU or GPU), or one estimator fit at a time (scikit-learn on
CPU, cuML on GPU). All backends follow `probe.fit.protocol`, so their numbers agree.

A few-shot budget is thousands of tiny fits: the torch backend solves every (support set,
label, fold, C) of a budget in one batched L-BFGS (`probe.fit.logistic`). At the full budget it
fits every C of the grid, for every label, in one chunked, preconditioned solve over the train
rows (`probe.fit.full_budget`). k-NN and prototypes read the rows in chunks (`probe.fit.neighbors`).

Every final fit leaves a `FitReport` in `backend.fit_reports` (iterations, final gradient, why
it stopped); a fit that used up `max_iter` did not converge, and the sweep warns about it.
"""

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from medprobe.cache.errors import ToolkitError
from medprobe.probe.fit.attentive import attentive_scores
from medprobe.probe.fit.estimators import EstimatorBackend
from medprobe.probe.fit.full_budget import full_budget_logreg
from medprobe.probe.fit.lbfgs import STOP_REASONS
from medprobe.probe.fit.logistic import C_GRID, DEFAULT_C, MAX_ITER, LinearProblem, fit_logistic
from medprobe.probe.fit.neighbors import as_numpy, knn_scores, prototype_scores
from medprobe.probe.fit.protocol import (  # re-exported: the backends' shared vocabulary
    C_TIE,
    P_FLOOR,
    FitReport,
    ProbeInputs,
    best_c,
    cv_folds,
    cv_splits,
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
# A full budget of at most this many train rows, single-label and without a val split, is the
# few-shot protocol on one support set that holds every row: the row-space solver
# (`probe.fit.logistic`) reaches its optimum in float64 in about a third of the iterations the
# chunked full-data solver needs there, and gives the same fits (same folds, C grid and
# standardisation per fold).
ROW_SPACE_ROWS = 2048
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
        logits = pool[index].double() @ weights + bias[:, None, :]  # float64, as the fits
        probabilities = torch.softmax(logits, dim=2)
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

        if not inputs.multilabel and inputs.val is None and len(support) <= ROW_SPACE_ROWS:
            one = replace(inputs, supports=[support], seeds=[seed], use_val=False)
            return self._few_shot_logreg(one, max_iter)[0]

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
        and rows (see `probe.fit.protocol`), so each of its folds is one row set for every label."""
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
        # Every final model against the test rows in one product, in float64 as the fits.
        weights = torch.cat([w for w, _ in fits], dim=1)
        logits = test.double() @ weights + torch.cat([b for _, b in fits])
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

    def attentive(self, inputs: ProbeInputs) -> list[np.ndarray]:
        """Test scores per support set, as `logreg`, of the attentive probe over
        `inputs.tokens` (`probe.fit.attentive`), on this backend's device."""
        return attentive_scores(inputs, inputs.tokens, self.device)

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
