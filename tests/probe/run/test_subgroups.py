"""Subgroups and per-study scoring end to end: every number in subgroups.csv and in the summary
of an aggregated run recomputed from the saved per-image predictions with scikit-learn and
numpy written plainly; the overall winner that loses a group, said in the report; bad input."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

import medprobe as mp
from medprobe.cache import (
    RowTable,
    StoreSpec,
    StoreWriter,
    ToolkitError,
    open_store,
    store_path,
)
from medprobe.cache.console import cli_message, run_app
from medprobe.probe.cli import app
from medprobe.probe.run.results import Results
from medprobe.probe.stats.scoring import shared_test_resamples
from medprobe.probe.stats.subgroups import (
    NO_IMAGES,
    NOT_DEFINED,
    Grouping,
    SubgroupSpec,
    group_scores,
    make_grouping,
)

N_TRAIN, N_VAL, N_TEST, DIM = 240, 80, 320, 8
RESAMPLES = 60


def write_store(root: Path, model: str, signal_m: float, signal_f: float, *, study=True) -> None:
    """A binary task where the label shows in the embedding with strength `signal_m` for men and
    `signal_f` for women (three in four images are men's); ages 20-89; studies of two images."""
    rng = np.random.default_rng(0)
    n_rows = N_TRAIN + N_VAL + N_TEST
    labels = rng.integers(0, 2, n_rows)
    sex = np.where(rng.random(n_rows) < 0.75, "M", "F")
    sex[::17] = ""  # missing stays missing
    age = rng.integers(20, 90, n_rows).astype(str)
    direction = rng.normal(size=DIM)
    strength = np.where(sex == "F", signal_f, signal_m)
    noise = np.random.default_rng(len(model)).normal(size=(n_rows, DIM))
    embeddings = (strength[:, None] * labels[:, None] * direction + noise).astype(np.float32)
    # the two images of a study share their label
    labels[1::2] = labels[::2]
    embeddings[1::2] = strength[1::2, None] * labels[1::2, None] * direction + noise[1::2]
    metadata = {"sex": sex.tolist(), "age": age.tolist()}
    if study:
        metadata["study"] = [f"study{i // 2}" for i in range(n_rows)]
    rows = RowTable(
        ids=[f"img{i:04d}.png" for i in range(n_rows)],
        splits=["train"] * N_TRAIN + ["val"] * N_VAL + ["test"] * N_TEST,
        labels=labels,
        metadata=metadata,
    )
    spec = StoreSpec(
        dataset={"name": "derm", "fingerprint": rows.fingerprint()},
        model={"name": model},
        preprocessing={},
        poolings=("cls",),
        task={
            "kind": "binary",
            "label_names": ["benign", "malignant"],
            "headline_metric": "roc_auc",
        },
    )
    with StoreWriter(store_path(root, spec), spec, rows) as writer:
        writer.append(0, np.ones(n_rows, bool), {"cls": embeddings})
        writer.finish()


@pytest.fixture(scope="module")
def derm_root(tmp_path_factory) -> Path:
    """'sharp' is far better for men (most images), hopeless for women; 'even' is fair to all."""
    root = tmp_path_factory.mktemp("derm") / "embeddings"
    write_store(root, "sharp", signal_m=4.0, signal_f=0.0)
    write_store(root, "even", signal_m=0.45, signal_f=0.45)
    return root


@pytest.fixture(scope="module")
def run(derm_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "sub"
    return mp.probe(
        derm_root,
        full=True,
        methods="logreg",
        subgroups="sex,age:20,50,90",
        bootstrap=RESAMPLES,
        save_predictions=True,
        progress=False,
        out=out,
    ), out


def _ece(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Top-label ECE over 15 equal-width bins (edge_b, edge_b+1], written out."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    total = 0.0
    for low, high in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if low == 0:
            inside |= confidence == 0
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return total / len(labels)


def _value(table: pd.DataFrame, model: str, attribute: str, group: str, metric: str) -> pd.Series:
    row = table[
        (table["model"] == model)
        & (table["attribute"] == attribute)
        & (table["group"].fillna("").astype(str) == group)
        & (table["metric"] == metric)
    ]
    assert len(row) == 1, (model, attribute, group, metric)
    return row.iloc[0]


def test_every_subgroup_number_equals_a_plain_recomputation(run, derm_root):
    results, out = run
    assert list(pd.read_csv(out / "subgroups.csv").columns[:12]) == [
        "dataset", "model", "pooling", "method", "budget", "attribute", "group", "n",
        "metric", "value", "low", "high",
    ]  # fmt: skip
    table = Results.load(out).subgroups()  # as saved and read back
    pd.testing.assert_frame_equal(results.subgroups(), table, check_dtype=False)
    part = results.predictions.datasets["derm"]
    ids, labels = part.ids, part.labels
    store = open_store(next(derm_root.rglob("sharp*.h5")))
    sex_of = dict(zip(store.ids("test"), store.metadata("test")["sex"], strict=True))
    sex = np.array([sex_of[i] for i in ids])
    counts = shared_test_resamples("derm", ids, None, RESAMPLES)  # the run's resamples
    gaps = {}
    for model in ("sharp", "even"):
        probabilities = results.predictions.scores("derm", model, "cls", "logreg", "full")
        by_group, drawn = {}, {}
        for group in ("F", "M"):
            members = sex == group
            row = _value(table, model, "sex", group, "roc_auc")
            assert row["n"] == members.sum()
            by_group[group] = roc_auc_score(labels[members], probabilities[members, 1])
            assert row["value"] == pytest.approx(by_group[group], abs=1e-9)
            # each resample: the group's images, each as often as the resample draws it
            drawn[group] = np.array(
                [
                    roc_auc_score(
                        np.repeat(labels[members], c[members]),
                        np.repeat(probabilities[members, 1], c[members]),
                    )
                    for c in counts
                ]
            )
            low, high = np.percentile(drawn[group], [2.5, 97.5])
            assert (row["low"], row["high"]) == pytest.approx((low, high), abs=1e-9)
            ece = _value(table, model, "sex", group, "ece")["value"]
            # predictions.h5 keeps float32 scores; the run scored them before that cast
            assert ece == pytest.approx(_ece(labels[members], probabilities[members]), abs=1e-6)
        gap = abs(by_group["F"] - by_group["M"])
        assert _value(table, model, "sex", "", "roc_auc_gap")["value"] == pytest.approx(gap)
        worst = _value(table, model, "sex", "", "roc_auc_worst")
        assert worst["value"] == pytest.approx(min(by_group.values()))
        gaps[model] = np.abs(drawn["F"] - drawn["M"])
        gap_row = _value(table, model, "sex", "", "roc_auc_gap")
        assert (gap_row["low"], gap_row["high"]) == pytest.approx(
            tuple(np.percentile(gaps[model], [2.5, 97.5])), abs=1e-9
        )
    # 'sharp' wins overall; 'even' has the smaller gap, paired on the same resamples
    versus = _value(table, "even", "sex", "sharp:cls", "roc_auc_gap_vs_winner")
    difference = gaps["even"] - gaps["sharp"]
    assert versus["value"] < 0 and versus["high"] < 0
    assert (versus["low"], versus["high"]) == pytest.approx(
        tuple(np.percentile(difference, [2.5, 97.5])), abs=1e-9
    )
    # age binned at the edges given; the last bin holds its upper edge
    ages = table[(table["attribute"] == "age") & (table["metric"] == "roc_auc")]
    assert set(ages["group"]) == {"[20, 50)", "[50, 90]"}
    # TPR and FPR per group, and the equalized-odds gap, for a binary task
    assert {"tpr", "fpr", "tpr_gap", "fpr_gap", "equalized_odds"} <= set(table["metric"])


def test_the_report_says_the_overall_winner_is_worse_for_a_group(run):
    results, out = run
    summary = results.summary()
    auc = summary[summary["metric"] == "roc_auc"].set_index("model")["mean"]
    assert auc["sharp"] > auc["even"]
    table = results.subgroups()
    female = table[(table["group"] == "F") & (table["metric"] == "roc_auc")].set_index("model")
    assert female.loc["sharp", "value"] < female.loc["even", "value"]
    report = (out / "report.md").read_text()
    assert "**sharp:cls** wins overall" in report and "sex = F: **even:cls**" in report
    assert (out / "derm_subgroups.png").is_file()


def test_a_group_with_one_class_is_reported_as_such_not_as_a_number(run):
    table = run[0].subgroups()
    undefined = table[table["value"].isna()]
    assert (undefined["note"] != "").all() and (
        table.loc[table["value"].notna(), "note"] == ""
    ).all()
    labels = np.array([0, 1, 0, 1, 1, 1])
    probabilities = np.array(
        [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9], [0.4, 0.6], [0.2, 0.8]]
    )
    grouping = Grouping("site", ("head", "trunk", "foot"), np.array([0, 0, 0, 1, 1, -1]))
    task = {"kind": "binary", "headline_metric": "roc_auc", "label_names": ["a", "b"]}
    (scores,) = group_scores(labels, probabilities, task, [grouping], None, np.array([0.5]))
    assert scores.values["roc_auc"][0] == roc_auc_score([0, 1, 0], [0.2, 0.7, 0.4])
    assert np.isnan(scores.values["roc_auc"][1]) and scores.notes[1] == NOT_DEFINED  # one class
    assert np.isnan(scores.values["roc_auc"][2]) and scores.notes[2] == NO_IMAGES
    assert scores.n.tolist() == [3, 2, 0]  # the image with no site is in no group
    # TPR and FPR at the threshold, plainly: predicted positive where p >= 0.5
    assert scores.values["tpr"][0] == 1.0 and scores.values["fpr"][0] == 0.0
    assert scores.values["tpr"][1] == 1.0 and np.isnan(scores.values["fpr"][1])


def test_study_aggregation_pools_image_probabilities_per_study(derm_root):
    for pool in ("mean", "max"):
        results = mp.probe(
            derm_root, full=True, methods="logreg", aggregate=f"study:{pool}", bootstrap=0,
            save_predictions=True, progress=False,
        )  # fmt: skip
        part = results.predictions.datasets["derm"]
        assert results.run["aggregated"]["derm"] == {
            "unit": "study", "pool": pool, "n_units": N_TEST // 2, "n_images": N_TEST,
        }  # fmt: skip
        study = np.array([int(i[3:7]) // 2 for i in part.ids])
        for model in ("sharp", "even"):
            positive = results.predictions.scores("derm", model, "cls", "logreg", "full")[:, 1]
            frame = pd.DataFrame({"study": study, "p": positive, "y": part.labels})
            pooled = frame.groupby("study").agg(p=("p", pool), y=("y", "max"))
            expected = roc_auc_score(pooled["y"], pooled["p"])
            summary = results.summary()
            value = summary[(summary["model"] == model) & (summary["metric"] == "roc_auc")]
            assert value["mean"].iloc[0] == pytest.approx(expected, abs=1e-6)


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--subgroups", "weight"], "no metadata column 'weight'; "),
        (["--subgroups", "sex,age:0,200"], "puts the test images in 1 group(s)"),
        (["--subgroups", "sex:0,1"], "is not numeric"),
        (["--subgroups", "age:50,40"], "must be at least two increasing numbers"),
        (["--aggregate", "visit"], "--aggregate 'visit': one of ['study', 'patient']"),
        (["--aggregate", "patient"], "records no patient per image"),
    ],
)
def test_bad_subgroup_and_aggregate_input_is_one_clear_error(derm_root, tmp_path, args, message):
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["run", "--full", "--cache-dir", str(derm_root), "--out", str(out), *args]
    )
    assert isinstance(result.exception, ToolkitError), result.output
    text = cli_message(result.exception, app)
    assert message in text and "\n" not in text
    assert not out.exists()


def test_unknown_column_names_the_columns_and_exits_2(derm_root, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_app(app, ["run", "--full", "--cache-dir", str(derm_root), "--subgroups", "weight"])
    assert exit_.value.code == 2
    stderr = capsys.readouterr().err
    assert "has: age, sex, study" in stderr and stderr.count("\n") == 1


def test_too_few_values_for_quantiles_and_no_study_ids(tmp_path):
    root = tmp_path / "embeddings"
    write_store(root, "plain", 1.0, 1.0, study=False)
    with pytest.raises(ToolkitError, match=r"records no study per image"):
        mp.probe(root, full=True, aggregate="study", progress=False)
    with pytest.raises(ToolkitError, match=r"2 distinct value\(s\), too few for 4 quantile"):
        make_grouping(SubgroupSpec("age"), np.array(["40", "60", "40", ""]), "dataset 'x'")
