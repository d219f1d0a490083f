"""Retrieval metrics over the test queries, with the test bootstrap's intervals: each metric is
the mean of its per-query values (`probe.fit.retrieval`), and on resample b the mean weighted by
how often b draws each query, so retrieval rows pair with every other probe's resamples."""

import numpy as np


def retrieval_metrics(
    per_query: dict[str, np.ndarray], counts: np.ndarray | None
) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
    """({metric: mean over queries}, {metric: (B,) float32 on each resample} or None).

    per_query: metric -> (Q,) float with NaN for a query where it is undefined (left out);
    counts: (B, Q) multiplicities, or None without a bootstrap."""
    names = list(per_query)
    values = np.stack([np.asarray(per_query[name], dtype=np.float64) for name in names], 1)
    defined = np.isfinite(values)  # (Q, M)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(defined, values, 0.0).sum(0) / defined.sum(0)
    metrics = {name: float(means[m]) for m, name in enumerate(names)}
    if counts is None:
        return metrics, None
    # Every metric's weighted sums in two products, the counts converted once: per metric they
    # were six conversions of a (B, Q) matrix, most of what retrieval added to a run.
    weights = np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        drawn = (weights @ np.where(defined, values, 0.0)) / (weights @ defined.astype(np.float64))
    return metrics, {name: drawn[:, m].astype(np.float32) for m, name in enumerate(names)}
