"""Intervals, ranking and paired differences against scipy's own computations."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medprobe.probe.stats.paired import (
    BOOTSTRAP_TEST,
    DEGENERATE_INTERVAL,
    FEW_SEEDS_NO_INTERVAL,
    FEW_SEEDS_TEST_INTERVAL,
    T_TEST,
    WILCOXON_TEST,
    headline_of,
    paired_differences,
    ranking,
    smallest_p_value,
    summarise,
    t_interval,
)


def results_frame(seeds: int = 8, metric: str = "accuracy") -> pd.DataFrame:
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
                    "metric": metric,
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


def test_paired_difference_uses_the_same_seeds_and_the_paired_t_test():
    frame = results_frame()
    paired = paired_differences(frame, "accuracy")
    assert len(paired) == 1
    row = paired.iloc[0]
    assert (row["entry"], row["best"]) == ("bad:cls", "good:cls")
    by_seed = frame.pivot_table(index="seed", columns="model", values="value")
    difference = (by_seed["bad"] - by_seed["good"]).to_numpy()
    assert row["difference"] == pytest.approx(difference.mean())
    assert row["p_value"] == pytest.approx(stats.ttest_rel(by_seed["bad"], by_seed["good"]).pvalue)
    assert row["test"] == "paired t-test over seeds" and row["can_reach_0.05"]
    # Pairing removes the shared per-seed difficulty: the interval is tight and excludes 0,
    # although the two entries' own intervals overlap.
    assert row["ci_high"] < 0
    summary = summarise(frame).set_index("model")
    assert summary.loc["bad", "ci_high"] > summary.loc["good", "ci_low"]


def test_ranking_puts_the_better_entry_first():
    summary = summarise(results_frame())
    assert ranking(summary, "accuracy")["entry"].tolist() == ["good:cls", "bad:cls"]


def full_budget_frame(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "dataset": "d",
                "model": model,
                "pooling": "cls",
                "method": "logreg",
                "budget": "full",
                "budget_kind": "full",
                "budget_value": 0.0,
                "seed": 0,
                "metric": "accuracy",
                "value": value,
            }
            for model, value in values.items()
        ]
    )


def test_full_budget_intervals_and_differences_come_from_the_shared_test_resamples():
    """Two entries scored on the same 500 resamples: the summary's interval is the percentile
    interval of each, the paired row the percentile interval of their difference, with the
    bootstrap p-value written out plainly."""
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 0.03, 500)  # the test sample's own luck, common to both entries
    draws = {"good": 0.82 + shared + rng.normal(0, 0.005, 500)}
    draws["bad"] = draws["good"] - 0.02 + rng.normal(0, 0.005, 500)
    resampled = {("d", m, "cls", "logreg", "full", 0): {"accuracy": v} for m, v in draws.items()}
    frame = full_budget_frame({"good": 0.82, "bad": 0.80})
    summary = summarise(frame, resampled).set_index("model")
    assert summary.loc["good", "interval"] == "test bootstrap (percentile)"
    expected = np.percentile(draws["good"], [2.5, 97.5])
    assert summary.loc["good", ["ci_low", "ci_high"]].tolist() == pytest.approx(expected)
    row = paired_differences(frame, "accuracy", resampled).iloc[0]
    difference = draws["bad"] - draws["good"]
    assert (row["entry"], row["best"], row["test"]) == (
        "bad:cls",
        "good:cls",
        "paired test bootstrap",
    )
    assert row["difference"] == pytest.approx(0.80 - 0.82)
    assert [row["ci_low"], row["ci_high"]] == pytest.approx(np.percentile(difference, [2.5, 97.5]))
    plain_p = min(1.0, 2 * min(1 + (difference <= 0).sum(), 1 + (difference >= 0).sum()) / 501)
    assert row["p_value"] == pytest.approx(plain_p) and row["p_value"] < 0.01
    # Unpaired, the two entries' intervals overlap: pairing is what tells them apart.
    assert summary.loc["bad", "ci_high"] > summary.loc["good", "ci_low"]


def test_a_few_shot_cell_keeps_its_seed_interval_and_gains_one_over_seeds_and_test():
    frame = results_frame(seeds=6)
    rng = np.random.default_rng(2)
    resampled = {}
    for model, group in frame.groupby("model"):
        for seed, value in zip(group["seed"], group["value"], strict=True):
            key = ("d", model, "cls", "logreg", "5-shot", int(seed))
            resampled[key] = {"accuracy": value + rng.normal(0, 0.05, 400)}
    summary = summarise(frame, resampled).set_index("model")
    row = summary.loc["good"]
    assert row["interval"] == "seeds (Student t)"
    values = frame[frame["model"] == "good"]["value"].to_numpy()
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(t_interval(values)[1:])
    assert row["ci_seeds_and_test_low"] < row["mean"] < row["ci_seeds_and_test_high"]
    # Test noise (sd 0.05 per resample) widens it beyond the test-free spread of the seeds' mean.
    seed_means = np.percentile(
        [values[np.random.default_rng(s).integers(0, 6, 6)].mean() for s in range(2000)],
        [2.5, 97.5],
    )
    both_width = row["ci_seeds_and_test_high"] - row["ci_seeds_and_test_low"]
    assert both_width > seed_means[1] - seed_means[0]


@pytest.mark.parametrize("n_seeds", [4, 5, 6, 8])
def test_smallest_attainable_p_matches_scipy(n_seeds):
    """Every difference of one sign is the most extreme data a test can see: scipy's exact
    Wilcoxon p there is its floor (0.0625 at 5 seeds: never significant), while the paired
    t-test reaches below 0.05 on the same differences."""
    difference = np.linspace(0.01, 0.02, n_seeds)
    wilcoxon_floor = stats.wilcoxon(difference, method="exact").pvalue
    assert smallest_p_value(WILCOXON_TEST, n_seeds) == pytest.approx(wilcoxon_floor)
    assert (smallest_p_value(WILCOXON_TEST, n_seeds) < 0.05) == (n_seeds >= 6)
    assert stats.ttest_1samp(difference, 0).pvalue < 0.05
    assert smallest_p_value(T_TEST, n_seeds) == 0.0
    draws = np.full(39, 0.1)  # every resampled difference above 0: the bootstrap's floor
    plain_floor = min(1.0, 2 * (1 + (draws <= 0).sum()) / (len(draws) + 1))
    assert smallest_p_value(BOOTSTRAP_TEST, 39) == pytest.approx(plain_floor) == 0.05


def test_five_seeds_of_a_consistent_lead_are_significant_and_say_they_could_be():
    paired = paired_differences(results_frame(seeds=5), "accuracy").iloc[0]
    assert paired["p_value"] < 0.05 and paired["can_reach_0.05"]


@pytest.mark.parametrize(
    ("metric", "floor", "ceiling"),
    [("accuracy", 0.0, 1.0), ("quadratic_kappa", -1.0, 1.0), ("log_loss", 0.0, np.inf)],
)
def test_seed_intervals_stay_inside_the_metric_range(metric, floor, ceiling):
    frame = results_frame(seeds=3, metric=metric)
    frame["value"] = {"accuracy": [1.0, 1.0, 0.8], "quadratic_kappa": [-1.0, -1.0, -0.7]}.get(
        metric, [0.0, 0.0, 0.3]
    ) * 2
    summary = summarise(frame)
    unclipped = t_interval(frame["value"].to_numpy()[:3])
    assert unclipped[1] < floor or unclipped[2] > ceiling  # the t interval would leave the range
    assert (summary["ci_low"] >= floor).all() and (summary["ci_high"] <= ceiling).all()


def test_two_seeds_give_no_t_interval_but_the_test_bootstrap_one_when_there_is_one():
    frame = results_frame(seeds=2)
    summary = summarise(frame).set_index("model")
    assert summary.loc["good", "interval"] == FEW_SEEDS_NO_INTERVAL
    assert np.isnan(summary.loc["good", "ci_low"])
    rng = np.random.default_rng(3)
    resampled = {
        ("d", model, "cls", "logreg", "5-shot", int(seed)): {
            "accuracy": value + rng.normal(0, 0.02, 200)
        }
        for model, seed, value in zip(frame["model"], frame["seed"], frame["value"], strict=True)
    }
    summary = summarise(frame, resampled).set_index("model")
    row = summary.loc["good"]
    assert row["interval"] == FEW_SEEDS_TEST_INTERVAL
    assert (row["ci_low"], row["ci_high"]) == (
        row["ci_seeds_and_test_low"],
        row["ci_seeds_and_test_high"],
    )
    assert np.isnan(paired_differences(frame, "accuracy").iloc[0]["ci_low"])


def test_a_full_budget_whose_resamples_all_score_the_same_says_the_bootstrap_is_degenerate():
    frame = full_budget_frame({"perfect": 1.0, "good": 0.9})
    resampled = {
        ("d", "perfect", "cls", "logreg", "full", 0): {"accuracy": np.ones(100)},
        ("d", "good", "cls", "logreg", "full", 0): {
            "accuracy": np.random.default_rng(0).uniform(0.8, 1.0, 100)
        },
    }
    summary = summarise(frame, resampled).set_index("model")
    assert summary.loc["perfect", "interval"] == DEGENERATE_INTERVAL
    assert summary.loc["good", "interval"] == "test bootstrap (percentile)"
    row = paired_differences(frame, "accuracy", resampled).iloc[0]
    assert row["can_reach_0.05"]  # 100 resamples: the floor 2/101 is below 0.05


def test_the_headline_of_a_retrieval_run_is_map_at_r_and_a_missing_one_is_warned(caplog):
    task = {"headline_metric": "balanced_accuracy"}
    retrieval = pd.DataFrame({"method": "retrieval", "metric": ["precision@1", "map@r"]})
    with caplog.at_level("WARNING"):
        assert headline_of(task, retrieval) == "map@r"
    assert not caplog.records
    mixed = pd.DataFrame({"method": ["logreg", "retrieval"], "metric": ["accuracy", "map@r"]})
    with caplog.at_level("WARNING"):
        assert headline_of(task, mixed) == "accuracy"
    assert "balanced_accuracy" in caplog.text
