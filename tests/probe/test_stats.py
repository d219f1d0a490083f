"""Intervals, ranking and paired differences against scipy's own computations."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medprobe.probe.stats import paired_differences, ranking, summarise, t_interval


def results_frame(seeds: int = 8) -> pd.DataFrame:
    """Entry 'good' beats 'bad' by ~0.1 on every seed; both share each seed's difficulty."""
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0, 0.15, seeds)
    rows = []
    for model, offset in (("good", 0.8), ("bad", 0.7)):
        for seed in range(seeds):
            value = offset + difficulty[seed] + rng.normal(0, 0.01)
            rows.append(
                {
                    "dataset": "d",
                    "model": model,
                    "pooling": "cls",
                    "method": "logreg",
                    "budget": "5-shot",
                    "budget_kind": "shots",
                    "budget_value": 5.0,
                    "seed": seed,
                    "metric": "accuracy",
                    "value": value,
                }
            )
    return pd.DataFrame(rows)


def test_t_interval_matches_scipy():
    values = np.array([0.61, 0.64, 0.58, 0.66, 0.62])
    mean, low, high = t_interval(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx(expected)
    assert np.isnan(t_interval(np.array([0.5]))[1])


def test_paired_difference_uses_the_same_seeds_and_wilcoxon():
    frame = results_frame()
    paired = paired_differences(frame, "accuracy")
    assert len(paired) == 1
    row = paired.iloc[0]
    assert (row["entry"], row["best"]) == ("bad:cls", "good:cls")
    by_seed = frame.pivot_table(index="seed", columns="model", values="value")
    difference = (by_seed["bad"] - by_seed["good"]).to_numpy()
    assert row["difference"] == pytest.approx(difference.mean())
    assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(difference).pvalue)
    # Pairing removes the shared per-seed difficulty: the interval is tight and excludes 0,
    # although the two entries' own intervals overlap.
    assert row["ci_high"] < 0
    summary = summarise(frame).set_index("model")
    assert summary.loc["bad", "ci_high"] > summary.loc["good", "ci_low"]


def test_ranking_puts_the_better_entry_first():
    summary = summarise(results_frame())
    assert ranking(summary, "accuracy")["entry"].tolist() == ["good:cls", "bad:cls"]
