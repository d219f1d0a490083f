"""The registry: every entry is well formed, names resolve, unknown ones name the closest."""

from pathlib import Path

import pytest

from medprobe.cache import ToolkitError
from medprobe.extract.models import default_registry, resolve_model
from medprobe.extract.models.describe import describe_models
from medprobe.extract.models.registry import ModelRegistry
from medprobe.extract.models.spec import POOLINGS

SEED_MODELS = [
    "dinov2",
    "dinov2-b",
    "mae",
    "aimv2",
    "sam",
    "sam2",
    "coca",
    "openclip",
    "blip",
    "resnet50",
    "deit-b",
    "efficientnet-lite0",
    "biomedclip",
    # issue 5: every size of each family, and the medical models
    "dinov2-s",
    "dinov2-g",
    "mae-l",
    "mae-h",
    "aimv2-h",
    "sam-l",
    "sam-h",
    "sam-1024",
    "sam2-t",
    "sam2-s",
    "sam2-l",
    "openclip-l",
    "coca-l",
    "vit-b",
    "rad-dino",
]


def test_every_seed_model_of_the_studies_is_registered():
    assert set(SEED_MODELS) <= set(default_registry().names())


@pytest.mark.parametrize("spec", default_registry().specs(), ids=lambda s: s.name)
def test_entries_are_complete(spec):
    assert spec.poolings and set(spec.poolings) <= set(POOLINGS)
    assert spec.reproduces, "each entry says which published embedding it reads"
    assert spec.preprocessing.input_size >= 32


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ToolkitError, match="did you mean dinov2"):
        resolve_model("dinov3")


def test_duplicate_names_are_refused():
    spec = resolve_model("resnet50")
    with pytest.raises(ValueError, match="registered twice"):
        ModelRegistry([spec, spec])


def test_timm_prefix_reads_timm_config_without_network():
    spec = resolve_model("timm:vit_small_patch16_224.augreg_in21k")
    assert spec.preprocessing.mean == (0.5, 0.5, 0.5) and spec.preprocessing.input_size == 224


def test_describe_lists_every_entry_with_costs_counted_on_meta():
    rows = describe_models()
    assert [r["name"] for r in rows] == default_registry().names()
    from medprobe.extract.models.describe import model_costs

    params, gflops = model_costs(resolve_model("resnet50"))
    assert 23.0e6 < params < 24.0e6  # torchvision ResNet-50 without its classifier: 23.5 M
    assert 7.5 < gflops < 9.0


def test_docs_models_table_is_the_registry():
    """docs/models.md's table is `extract models --markdown`; regenerate it when this fails."""
    from medprobe.extract.models.describe import markdown_table

    text = (Path(__file__).parents[3] / "docs" / "models.md").read_text()
    documented = text.split("<!-- generated: extract models --markdown -->\n")[1]
    documented = documented.split("\n<!-- end generated -->")[0].splitlines()
    without_costs = []
    for line in documented:
        cells = line.split(" | ")
        del cells[6:9]  # params, GFLOPs, tokens: counted, not stated, so left out of comparing
        without_costs.append(" | ".join(cells))
    registry = markdown_table(describe_models(with_notes=True)).splitlines()
    assert without_costs[0] == registry[0]
    assert without_costs[2:] == registry[2:]
