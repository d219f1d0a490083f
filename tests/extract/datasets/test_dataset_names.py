"""Two datasets of one adapter in one cache: each takes its own name (`name=`), and when two
stores of one name do not hold the same images, the error says what differs and the fix."""

import shutil

import pytest

from medprobe.cache import ToolkitError
from medprobe.cache.inventory.catalog import list_stores
from medprobe.extract.datasets import DATASETS, build_dataset
from medprobe.extract.pipeline import ExtractionOptions, extract_dataset
from medprobe.probe.targets import select_targets
from tests.extract.conftest import tiny_vit_spec, write_folder_dataset

FAST = dict(num_workers=0, progress=False, batch_size=8, pretrained=False)


def extract(root, cache, limit=None, **options):
    dataset = build_dataset("folder", root, **options)
    options = ExtractionOptions(limit=limit, **FAST)
    return extract_dataset(dataset, [tiny_vit_spec()], cache_root=cache, options=options)


def test_named_folders_share_a_cache_and_are_probed_as_two_datasets(tmp_path):
    skin = write_folder_dataset(tmp_path / "skin", n_per_class=4)
    eyes = write_folder_dataset(tmp_path / "eyes", n_per_class=5, classes=("a", "b", "c"))
    cache = tmp_path / "cache"
    extract(skin, cache, name="skin-a")
    extract(eyes, cache, name="eyes")
    assert sorted(e.dataset for e in list_stores(cache)) == ["eyes", "skin-a"]
    assert sorted(p.name for p in cache.iterdir()) == ["eyes", "skin-a"]
    assert {t.dataset for t in select_targets(cache)} == {"eyes", "skin-a"}
    assert "name" in DATASETS["folder"].option_names and "name" in DATASETS["csv"].option_names
    assert "name" not in DATASETS["isic2019"].option_names  # a published dataset keeps its name


def _other_folder(tmp_path, cache):
    extract(write_folder_dataset(tmp_path / "b", n_per_class=5), cache)


def _trial(tmp_path, cache):
    extract(tmp_path / "a", cache, limit=5)


def _relabelled(tmp_path, cache):
    shutil.move(tmp_path / "a" / "benign" / "000.png", tmp_path / "a" / "malignant" / "x.png")
    extract(tmp_path / "a", cache)


def _other_seed(tmp_path, cache):
    extract(tmp_path / "a", cache, seed=7)


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (_other_folder, "they differ in data_root '"),
        (_other_folder, "two datasets share one name: extract each under its own (`extract run "),
        (_trial, "; a trial run (--limit) sits beside another run: `cache rm` the one you"),
        (_relabelled, "from the same folder with the same options, so the images or labels"),
        (_other_seed, "they differ in options.split_seed "),
    ],
    ids=["folder", "folder-fix", "trial", "relabelled", "seed"],  # each message names both stores
)
def test_stores_of_one_name_that_disagree_say_what_differs(tmp_path, second, message):
    cache = tmp_path / "cache"
    extract(write_folder_dataset(tmp_path / "a", n_per_class=4), cache)
    second(tmp_path, cache)
    with pytest.raises(ToolkitError, match="disagree on the") as refused:
        select_targets(cache, include_trials=True)
    text = str(refused.value)
    assert message in text, text
    assert "--limit or dataset options?" not in text and "models=" not in text
