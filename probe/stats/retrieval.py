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
    metrics, resampled = {}, None if counts is None else {}
    for name, values in per_query.items():
        defined = np.isfinite(values)
        metrics[name] = float(values[defined].mean()) if defined.any() else float("nan")
        if counts is not None:
            weights = counts[:, defined].astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                drawn = (weights @ values[defined]) / weights.sum(1)
            resampled[name] = drawn.astype(np.float32)
    return metrics, resampled
