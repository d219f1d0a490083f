"""`--weights` files that are no checkpoint of the model are refused in one line naming the file,
by every source; random-init weights are the same on every build and leave global state alone."""

import json
import re

import pytest
import torch

from medprobe.cache import ToolkitError
from medprobe.extract.models import build_backbone, resolve_model
from tests.extract.conftest import TINY_VIT_KWARGS, tiny_vit_spec
from tests.extract.models.test_seem import small_seem_spec
from tests.extract.models.test_sources import TINY_COCA
from tests.extract.models.test_vmamba import tiny_spec as tiny_vmamba_spec


def tiny_coca_spec(tmp_path):
    import open_clip

    config = tmp_path / "coca_tiny_weights.json"
    config.write_text(json.dumps(TINY_COCA))
    open_clip.add_model_config(config)
    return resolve_model("open_clip:coca_tiny_weights/none")


SPECS = {
    "timm": lambda tmp_path: tiny_vit_spec(),
    "bundled": lambda tmp_path: resolve_model("efficientnet-lite0"),
    "seem": lambda tmp_path: small_seem_spec(),
    "vmamba": lambda tmp_path: tiny_vmamba_spec(),
    "open_clip": tiny_coca_spec,
}
BAD_FILES = {
    "text": lambda path: path.write_text("hello, not a checkpoint"),
    "empty": lambda path: path.write_bytes(b""),
    "truncated": lambda path: path.write_bytes(_checkpoint_bytes(path)[:100]),
    "another model's": lambda path: torch.save({"fc.weight": torch.zeros(3, 3)}, path),
}


def _checkpoint_bytes(path):
    torch.save({"layer.weight": torch.zeros(64, 64)}, path)
    return path.read_bytes()


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("source", sorted(SPECS))
def test_a_file_that_is_no_checkpoint_of_the_model_is_one_clear_error(tmp_path, source, kind):
    spec = SPECS[source](tmp_path)
    path = tmp_path / "weights.pth"
    BAD_FILES[kind](path)
    with pytest.raises(ToolkitError) as caught:
        build_backbone(spec, weights=path)
    message = str(caught.value)
    assert re.match(rf"(weights=)?{re.escape(str(path))}(:| is) not ", message), message
    assert "\n" not in message


def test_an_hf_folder_that_is_no_saved_model_is_one_clear_error(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    spec = resolve_model("blip")
    with pytest.raises(ToolkitError, match=re.escape(f"weights={folder}: not a save_pretrained")):
        build_backbone(spec, weights=folder)


def test_timm_refuses_a_file_that_would_load_only_partly(tmp_path):
    """timm loads non-strictly when the classifier is dropped; a file of another layout would
    then leave the model at its random init, labelled pretrained."""
    import timm

    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, **TINY_VIT_KWARGS)
    state = model.state_dict()
    del state["blocks.0.mlp.fc2.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ToolkitError, match=r"Missing key\(s\).*blocks\.0\.mlp\.fc2\.weight"):
        build_backbone(tiny_vit_spec(), weights=path)


def test_timm_loads_a_file_with_or_without_its_classifier(tmp_path):
    import timm

    torch.manual_seed(4)
    with_head = timm.create_model("vit_tiny_patch16_224", **TINY_VIT_KWARGS).eval()
    for name, state in (
        ("with_head.pth", with_head.state_dict()),
        ("headless.pth", {k: v for k, v in with_head.state_dict().items() if "head" not in k}),
    ):
        torch.save(state, tmp_path / name)
        backbone = build_backbone(tiny_vit_spec(), weights=tmp_path / name)
        images = torch.randn(2, 3, 32, 32)
        expected = with_head.forward_head(with_head.forward_features(images), pre_logits=True)
        with torch.inference_mode():
            torch.testing.assert_close(backbone(images)["cls"], expected)


@pytest.mark.parametrize("name", ["timm", "seem", "vmamba"])
def test_random_init_is_the_same_on_every_build_and_leaves_global_state_alone(tmp_path, name):
    spec = SPECS[name](tmp_path)
    torch.manual_seed(11)
    expected_next = torch.rand(3)
    torch.manual_seed(11)
    first = build_backbone(spec, pretrained=False).state_dict()
    assert torch.equal(torch.rand(3), expected_next), "the global generator is untouched"
    second = build_backbone(spec, pretrained=False).state_dict()
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key
