"""A randomly initialised network (`--no-pretrained`) is never shown under its pretrained name:
`cache ls`, `mp.stores()`, the probe's targets and its results all mark it `(random init)`."""

import pytest

import medprobe as mp
import medprobe.extract.models as models_package
from medprobe.cache.console import run_app
from medprobe.cache.inventory.catalog import list_stores
from medprobe.cache.reader import display_model_name
from medprobe.extract import cli as extract_cli
from medprobe.probe.targets import select_targets
from tests.extract.conftest import tiny_vit_spec, write_folder_dataset

RANDOM = "tiny-vit (random init)"


@pytest.mark.parametrize(
    ("model", "shown"),
    [
        ({"name": "resnet50", "pretrained": True}, "resnet50"),
        ({"name": "resnet50", "pretrained": False}, "resnet50 (random init)"),
        ({"name": "resnet50", "pretrained": False, "weights_sha256": "ab"}, "resnet50"),
        ({"name": "resnet50"}, "resnet50"),  # stores written before the flag was keyed
    ],
)
def test_display_name_marks_only_a_random_initialisation(model, shown):
    assert display_model_name(model) == shown


def test_random_and_pretrained_stores_are_told_apart_everywhere(
    tmp_path, capsys, monkeypatch, tiny_vit_weights
):
    monkeypatch.setenv("COLUMNS", "1000")
    monkeypatch.setattr(models_package, "resolve_model", lambda name: tiny_vit_spec())
    images = write_folder_dataset(tmp_path / "images", n_per_class=10)
    cache = tmp_path / "cache"
    run = ["run", "--model", "tiny-vit", "--dataset", "folder", "--data-dir", str(images)]
    run += ["--cache-dir", str(cache), "--workers", "0"]
    for extra in (["--no-pretrained"], ["--weights", str(tiny_vit_weights)]):
        with pytest.raises(SystemExit) as exited:
            run_app(extract_cli.app, [*run, *extra])
        assert exited.value.code == 0, capsys.readouterr()
    assert f"folder x {RANDOM}" in capsys.readouterr().out  # the progress bar's label

    assert sorted(e.model for e in list_stores(cache)) == ["tiny-vit", RANDOM]
    assert sorted(mp.stores(cache)["model"]) == ["tiny-vit", RANDOM]
    from medprobe.cache.cli import app as cache_app

    with pytest.raises(SystemExit):
        run_app(cache_app, ["ls", "--cache-dir", str(cache)])
    assert RANDOM in capsys.readouterr().out

    targets = select_targets(cache, poolings=["cls"])
    assert sorted(t.model for t in targets) == ["tiny-vit", RANDOM]
    assert [t.model for t in select_targets(cache, models=[RANDOM])] == [RANDOM] * 2
    results = mp.probe(
        cache, full=True, seeds=1, methods=["prototype"], poolings=["cls"], bootstrap=0,
        progress=False,
    )  # fmt: skip
    assert set(results.frame["model"]) == {"tiny-vit", RANDOM}
