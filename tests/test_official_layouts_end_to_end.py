"""datasets → extract → cache → probe on each official layout: the store carries the split, the
groups and the headline metric, and `probe run` leads its report with that metric."""

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medprobe.cache import open_store
from medprobe.extract.datasets import build_dataset
from medprobe.extract.pipeline import ExtractionOptions, extract_dataset
from medprobe.probe.cli import app
from tests.extract.conftest import tiny_vit_spec
from tests.extract.datasets.test_cbis_ddsm import write_cbis
from tests.extract.datasets.test_options_and_medmnist import write_npz
from tests.extract.datasets.test_seed_datasets import write_chexpert, write_csv, write_isic


def write_aptos(root):
    (root / "train_images").mkdir(parents=True)
    rows = []
    for i in range(40):
        code = f"{i:04x}9f3e"
        Image.new("RGB", (36, 30), (40 * (i % 5), 90, 30)).save(
            root / "train_images" / f"{code}.png"
        )
        rows.append([code, str(i % 5)])
    write_csv(root / "train.csv", ["id_code", "diagnosis"], rows)
    return root


LAYOUTS = {
    # dataset: (writer, adapter options, headline metric, has groups)
    "isic2019": (lambda root: write_isic(root, n_per_class=6), {}, "balanced_accuracy", True),
    "aptos2019": (write_aptos, {}, "quadratic_kappa", False),
    "chexpert": (lambda root: write_chexpert(root, n_patients=20), {}, "mean_auroc", True),
    "cbis_ddsm": (write_cbis, {}, "roc_auc", True),
    "medmnist": (
        lambda root: write_npz(root.parent / "dermamnist.npz", "dermamnist", n=(30, 8, 10)),
        {},
        "accuracy",
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_official_layout_through_extract_and_probe(tmp_path, name):
    writer, options, headline, has_groups = LAYOUTS[name]
    data_dir = writer(tmp_path / name)
    dataset = build_dataset(name, data_dir, **options)
    cache_root = tmp_path / "embeddings"
    report = extract_dataset(
        dataset,
        [tiny_vit_spec()],
        cache_root=cache_root,
        options=ExtractionOptions(pretrained=False, num_workers=0, batch_size=8, progress=False),
    )
    store = open_store(report.written[0])
    assert store.task["headline_metric"] == headline
    assert store.info["split"] and set(store.splits) >= {"train", "test"}
    assert (store.groups("train") is not None) == has_groups

    out = tmp_path / "results"
    result = CliRunner().invoke(
        app,
        ["run", "--shots", "1", "--seeds", "2", "--allow-fewer", "--cache-dir", str(cache_root),
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"## {name} — headline metric: {headline}" in (out / "report.md").read_text()
    results = pd.read_csv(out / "results.csv")
    assert results["metric"].iloc[0] == headline
