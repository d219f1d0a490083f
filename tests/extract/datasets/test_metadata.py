"""The adapters record the metadata their datasets' own files hold, outside the store key."""

import csv

import pytest
from PIL import Image

from medprobe.cache import ToolkitError
from medprobe.extract.datasets import build_dataset
from tests.extract.datasets.test_cbis_ddsm import write_cbis
from tests.extract.datasets.test_seed_datasets import write_chexpert, write_isic


def test_isic2019_metadata_from_the_official_csv(tmp_path):
    dataset = build_dataset("isic2019", write_isic(tmp_path / "isic"))
    metadata = dataset.rows.metadata
    assert set(metadata) == {"age_approx", "sex", "anatom_site_general"}
    assert set(metadata["sex"]) == {"male"} and set(metadata["age_approx"]) == {"45.0"}
    assert (
        build_dataset("isic2019", write_isic(tmp_path / "bare", lesions=False)).rows.metadata
        is None
    )


def test_chexpert_metadata_and_studies(tmp_path):
    dataset = build_dataset("chexpert", write_chexpert(tmp_path / "CheXpert-v1.0-small"))
    metadata = dataset.rows.metadata
    assert set(metadata) == {"sex", "age", "view", "projection", "study"}
    row = dataset.rows.ids.index("train/patient00003/study1/view2_lateral.jpg")
    assert metadata["view"][row] == "Lateral" and metadata["sex"][row] == "Male"
    assert metadata["study"][row] == "patient00003/study1"
    # frontal and lateral images of one study are one unit
    assert len(set(metadata["study"])) == len(dataset) // 2


def test_cbis_ddsm_metadata_and_lesion_studies(tmp_path):
    dataset = build_dataset("cbis_ddsm", write_cbis(tmp_path / "cbis"))
    metadata = dataset.rows.metadata
    assert set(metadata) == {"density", "side", "view", "abnormality", "study"}
    row = next(i for i, name in enumerate(dataset.rows.ids) if "Calc-Test_P_00013_LEFT_CC" in name)
    assert (metadata["side"][row], metadata["view"][row]) == ("LEFT", "CC")
    assert metadata["abnormality"][row] == "calc"  # as the case table spells it
    assert metadata["study"][row] == "P_00013/LEFT/calc"
    assert set(metadata["density"]) == {"3"}


def test_csv_metadata_option_keeps_missing_missing_and_leaves_the_key(tmp_path):
    rows = [["path", "label", "sex", "age"]]
    for i in range(12):
        Image.new("L", (4, 4), i).save(tmp_path / f"{i}.png")
        rows.append([f"{i}.png", str(i % 2), ["F", "M", "NaN"][i % 3], str(20 + i)])
    with open(tmp_path / "list.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    plain = build_dataset("csv", tmp_path / "list.csv")
    dataset = build_dataset("csv", tmp_path / "list.csv", metadata="sex,age")
    assert dataset.rows.metadata["sex"][:3] == ["F", "M", ""]
    assert dataset.rows.fingerprint() == plain.rows.fingerprint()
    assert dataset.options == plain.options
    with pytest.raises(ToolkitError, match=r"no column\(s\) \['weight'\]; it has"):
        build_dataset("csv", tmp_path / "list.csv", metadata="sex,weight")
