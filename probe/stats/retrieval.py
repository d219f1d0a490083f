"""Retrieval metrics over the test queries, with the test bootstrap's intervals: each metric is
the mean of its per-query values (`probe.fit.retrieval`), and on resample b the mean weighted by
how often b draws each query, so retrieval rows pair with every other probe's resamples."""

from collections.abc import Sequence

import numpy as np


def retrieval_metrics(
    per_query: Sequence[dict[str, np.ndarray]], counts: np.ndarray | None
) -> list[tuple[dict[str, float], dict[str, np.ndarray] | None]]:
    """Per probe (e.g. each seed of a budget): ({metric: mean over queries}, {metric: (B,)
    float32 on each resample} or None).

    per_query: per probe, metric -> (Q,) float with NaN for a query where it is undefined (left
    out); counts: (B, Q) multiplicities, or None without a bootstrap. Every probe's weighted
    sums and their denominators come from one product over the counts, converted once: the
    product streams the (B, Q) weights from memory, and per metric and probe it was most of what
    retrieval added to a run."""
    names = [list(cell) for cell in per_query]
    values = np.concatenate(
        [np.stack([np.asarray(cell[n], dtype=np.float64) for n in cell], 1) for cell in per_query],
        axis=1,
    )  # (Q, probes x metrics)
    defined = np.isfinite(values)
    sums = np.concatenate([np.where(defined, values, 0.0), defined.astype(np.float64)], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums.sum(0)
        means = means[: values.shape[1]] / means[values.shape[1] :]
        drawn = None
        if counts is not None:
            weighted = np.asarray(counts, dtype=np.float64) @ sums  # (B, 2 x columns)
            drawn = weighted[:, : values.shape[1]] / weighted[:, values.shape[1] :]
    results, column = [], 0
    for cell_names in names:
        columns = range(column, column + len(cell_names))
        metrics = {n: float(means[c]) for n, c in zip(cell_names, columns, strict=True)}
        resampled = None
        if drawn is not None:
            resampled = {
                n: drawn[:, c].astype(np.float32) for n, c in zip(cell_names, columns, strict=True)
            }
        results.append((metrics, resampled))
        column += len(cell_names)
    return results
