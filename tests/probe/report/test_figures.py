"""Figures handed to users save whole with a plain `figure.savefig(path)`: legend and title
inside the canvas (docs/python.md saves them so, with no bbox_inches)."""

import pandas as pd
import pytest

from medprobe.probe.report.figures import (
    PALETTE,
    entry_styles,
    label_efficiency_figure,
    reliability_figure,
)
from medprobe.probe.similarity.report import SimilarityResults


def assert_saved_whole(figure, path) -> None:
    figure.savefig(path)  # what a notebook does: no bbox_inches="tight"
    canvas = figure.bbox
    texts = [*figure.legends, *(t for t in (figure._suptitle,) if t is not None)]
    texts += [axis.title for axis in figure.axes if axis.get_title()]
    assert texts
    for artist in texts:
        box = artist.get_window_extent()
        assert box.x0 >= canvas.x0 - 1 and box.x1 <= canvas.x1 + 1, (artist, box, canvas)
        assert box.y0 >= canvas.y0 - 1 and box.y1 <= canvas.y1 + 1, (artist, box, canvas)


def summary_rows(n_models: int, methods=("knn",)) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "dataset": "a_dataset_with_a_long_name",
                "model": f"timm:vit_base_patch16_224.augreg_in21k_{i}",
                "pooling": "cls",
                "method": method,
                "budget": budget,
                "budget_kind": "shots",
                "budget_value": value,
                "metric": "balanced_accuracy",
                "mean": 0.5 + 0.01 * i,
                "ci_low": 0.4,
                "ci_high": 0.9,
            }
            for i in range(n_models)
            for method in methods
            for budget, value in (("1-shot", 1), ("5-shot", 5))
        ]
    )


@pytest.mark.parametrize("n_models", [2, 12])
def test_label_efficiency_and_reliability_figures_save_whole(tmp_path, n_models):
    figure = label_efficiency_figure(
        summary_rows(n_models), "a_dataset_with_a_long_name", "balanced_accuracy", n_classes=4
    )
    assert_saved_whole(figure, tmp_path / "curves.png")
    calibration = pd.DataFrame(
        [
            {
                "dataset": "d",
                "model": f"m{i}",
                "pooling": "cls",
                "method": "logreg",
                "budget": "5-shot",
                "bin_low": b / 15,
                "bin_high": (b + 1) / 15,
                "count": 3,
                "confidence": (b + 0.5) / 15,
                "accuracy": (b + 0.5) / 15,
            }
            for i in range(n_models)
            for b in range(15)
        ]
    )
    figure = reliability_figure(calibration, "d")
    assert "15 bins" in figure._suptitle.get_text()
    assert_saved_whole(figure, tmp_path / "reliability.png")


def test_the_similarity_heatmap_of_two_entries_saves_with_its_title(tmp_path):
    frame = pd.DataFrame(
        {
            "dataset": "digits",
            "a": ["efficientnet-lite0:pooled", "efficientnet-lite0:pooled", "timm:resnet10t:mean"],
            "b": ["efficientnet-lite0:pooled", "timm:resnet10t:mean", "timm:resnet10t:mean"],
            "metric": "cka_debiased",
            "value": [1.0, 0.31, 1.0],
            "n_rows": 1797,
        }
    )
    figure = SimilarityResults(frame).plot("digits", "cka_debiased")
    assert_saved_whole(figure, tmp_path / "cka.png")


def test_twelve_entries_get_twelve_colours():
    styles = entry_styles([f"m{i}" for i in range(1, 13)])
    assert len({colour for colour, _ in styles.values()}) == 12
    assert len(set(PALETTE)) == len(PALETTE) == 20
