"""Issue 14's check, end to end: `probe run --shots 5 --full --seeds 3 --save-predictions` on two
stores, then accuracy, ECE, Brier and the bootstrap interval recomputed independently from
predictions.h5 equal results.csv and summary.csv."""

import h5py
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score
from typer.testing import CliRunner

from medprobe.probe.cli import app
from medprobe.probe.stats.scoring import shared_test_resamples
from tests.probe.conftest import write_blob_store

BOOTSTRAP = 300


def plain_ece(labels, probabilities, n_bins=15):
    """Top-label ECE written out: equal-width bins (b/15, (b+1)/15], |accuracy - confidence|
    weighted by the bin's share of images."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    total = 0.0
    for b in range(n_bins):
        low, high = b / n_bins, (b + 1) / n_bins
        inside = (confidence > low) & (confidence <= high) if b else (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


@pytest.fixture
def run_folder(tmp_path):
    root = tmp_path / "embeddings"
    for model, separation in (("strong", 1.6), ("weak", 0.5)):
        write_blob_store(root, model=model, separation=separation, n_val=60, images_per_patient=4)
    out = tmp_path / "run"
    arguments = ["--shots", "5", "--full", "--seeds", "3", "--save-predictions"]
    arguments += ["--bootstrap", str(BOOTSTRAP), "--cache-dir", str(root), "--out", str(out)]
    result = CliRunner().invoke(app, ["run", *arguments])
    assert result.exit_code == 0, result.output
    return out


def test_metrics_recomputed_from_predictions_equal_results_csv(run_folder):
    results = pd.read_csv(run_folder / "results.csv")
    with h5py.File(run_folder / "predictions.h5", "r") as handle:
        labels = handle["blobs/labels"][()]
        for model in ("strong", "weak"):
            for method in ("logreg", "knn", "prototype"):
                for budget, seeds in (("5-shot", (0, 1, 2)), ("full", (0,))):
                    for seed in seeds:
                        path = f"blobs/{model}/cls/{method}/{budget}/seed{seed}/scores"
                        scores = handle[path][()].astype(np.float64)
                        row = results.query(
                            "model == @model and method == @method and budget == @budget "
                            "and seed == @seed"
                        ).set_index("metric")["value"]
                        one_hot = np.eye(scores.shape[1])[labels]
                        assert row["accuracy"] == pytest.approx(
                            accuracy_score(labels, scores.argmax(1)), abs=1e-9
                        )
                        assert row["brier"] == pytest.approx(
                            ((scores - one_hot) ** 2).sum(1).mean(), abs=1e-6
                        )
                        assert row["ece"] == pytest.approx(plain_ece(labels, scores), abs=1e-6)


def test_full_budget_intervals_recomputed_from_predictions_equal_summary_csv(run_folder):
    summary = pd.read_csv(run_folder / "summary.csv")
    full = summary.query("budget == 'full' and metric == 'accuracy'").set_index(["model", "method"])
    # the strong model scores every resample alike: said so, with the same (zero-width) bounds
    assert set(full["interval"]) <= {
        "test bootstrap (percentile)",
        "test bootstrap degenerate: every resample scored the same",
    }
    with h5py.File(run_folder / "predictions.h5", "r") as handle:
        ids = np.array([i.decode() for i in handle["blobs/ids"][()]])
        labels = handle["blobs/labels"][()]
        # The resamples as documented: drawn per dataset over the sorted test ids, whole
        # patients together (this store's groups: four consecutive cases per patient).
        patients = np.array([f"patient{int(i[4:8]) // 4:04d}" for i in ids])
        counts = shared_test_resamples("blobs", ids, patients, BOOTSTRAP)
        for model in ("strong", "weak"):
            scores = handle[f"blobs/{model}/cls/logreg/full/seed0/scores"][()]
            correct = (scores.argmax(1) == labels).astype(float)
            per_resample = (counts * correct).sum(1) / counts.sum(1)
            low, high = np.percentile(per_resample, [2.5, 97.5])
            assert full.loc[(model, "logreg"), "ci_low"] == pytest.approx(low, abs=1e-6)
            assert full.loc[(model, "logreg"), "ci_high"] == pytest.approx(high, abs=1e-6)
    for drawn in counts:  # a patient is drawn whole or not at all
        for patient in np.unique(patients):
            in_patient = drawn[patients == patient]
            assert (in_patient == in_patient[0]).all()


def test_paired_full_budget_rows_and_the_report_explain_themselves(run_folder):
    paired = pd.read_csv(run_folder / "paired.csv")
    full = paired[paired["budget"] == "full"]
    assert len(full) == 3 and set(full["test"]) == {"paired test bootstrap"}
    assert (full["entry"] == "weak:cls").all() and (full["p_value"] < 0.05).all()
    assert (full["ci_high"] < 0).all()
    few = paired[paired["budget"] == "5-shot"]
    assert set(few["test"]) == {"paired t-test over seeds"} and few["can_reach_0.05"].all()
    report = (run_folder / "report.md").read_text()
    assert "test bootstrap (percentile)" in report and "whole patients/lesions" in report
    assert (run_folder / "blobs_reliability.png").stat().st_size > 5000


def write_binary_roc_auc_stores(root, separations: dict[str, float], **options) -> None:
    """One store per model of a two-class dataset whose headline is ROC-AUC."""
    for model, separation in separations.items():
        write_blob_store(
            root,
            model=model,
            separation=separation,
            n_classes=2,
            kind="binary",
            headline="roc_auc",
            n_val=40,
            **options,
        )


def test_a_binary_roc_auc_dataset_gets_delongs_test(tmp_path):
    root = tmp_path / "embeddings"
    write_binary_roc_auc_stores(root, {"strong": 1.5, "weak": 0.4})
    out = tmp_path / "run"
    arguments = ["--full", "--bootstrap", "200", "--cache-dir", str(root), "--out", str(out)]
    assert CliRunner().invoke(app, ["run", *arguments]).exit_code == 0
    paired = pd.read_csv(out / "paired.csv")
    assert set(paired["metric"]) == {"roc_auc"}
    assert paired["p_delong"].notna().all() and (paired["p_delong"] < 0.05).all()


def test_delongs_test_is_clustered_by_patient_where_the_store_records_patients(tmp_path):
    from medprobe.probe.stats.delong import delong_paired
    from medprobe.probe.stats.predictions import Predictions

    root = tmp_path / "embeddings"
    write_binary_roc_auc_stores(root, {"strong": 1.0, "weak": 0.6}, images_per_patient=4)
    out = tmp_path / "run"
    arguments = ["--full", "--bootstrap", "200", "--save-predictions", "--cache-dir", str(root)]
    assert CliRunner().invoke(app, ["run", *arguments, "--out", str(out)]).exit_code == 0
    paired = pd.read_csv(out / "paired.csv")
    (row,) = paired[paired["method"] == "logreg"].to_dict("records")
    assert row["best"].startswith("strong")
    part = Predictions.load(out / "predictions.h5").datasets["blobs"]
    assert len(set(part.groups)) == 25  # 100 test images, 4 per patient
    positive = part.labels == 1
    a, b = (part.scores[(m, "cls", "logreg", "full", 0)][:, 1] for m in ("weak", "strong"))
    clustered = delong_paired(positive, a, b, groups=part.groups)
    assert row["p_delong"] == pytest.approx(clustered.p_value, rel=1e-9)
    assert row["p_delong"] != pytest.approx(delong_paired(positive, a, b).p_value, rel=1e-3)
