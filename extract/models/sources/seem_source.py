"""SEEM's FocalNet-T image backbone (our `focal_dw` module) from the `seem_focalt_v0` checkpoint."""

from pathlib import Path

import torch

from medprobe.cache.errors import ToolkitError
from medprobe.extract.models.backbone import Backbone, pool_feature_map
from medprobe.extract.models.sources.strict import load_strictly, reading_weights
from medprobe.extract.models.spec import ModelSpec
from medprobe.extract.models.tokens import TOKENS, grid_from_map

# Where SEEM publishes its checkpoints: the Hugging Face repo and file of each `checkpoint` id.
SEEM_HUB_REPO = "xdecoder/SEEM"


def seem_checkpoint_path(checkpoint: str) -> Path:
    """The checkpoint file from the Hugging Face cache (download when online)."""
    from huggingface_hub import hf_hub_download

    filename = f"{checkpoint}.pt"
    try:
        return Path(hf_hub_download(SEEM_HUB_REPO, filename))
    except Exception as error:  # the hub raises several types for "not reachable/not found"
        raise ToolkitError(
            f"SEEM checkpoint {filename!r} is not in the Hugging Face cache ({error}). Offline? "
            f"Run `hf download {SEEM_HUB_REPO} {filename}` on a machine with internet and copy "
            "~/.cache/huggingface, or pass --weights /path/to/" + filename
        ) from error


def _pool(encoder, images):
    features = encoder(images)
    return {**pool_feature_map(features), TOKENS: grid_from_map(features)}


def build_seem(spec: ModelSpec, *, weights: Path | None, pretrained: bool) -> Backbone:
    """FocalNet-DW loaded strictly from SEEM's whole-model checkpoint (backbone keys only)."""
    from medprobe.extract.models.focal_dw import FocalNetDW, seem_backbone_state_dict

    model = FocalNetDW(**dict(spec.build_kwargs))
    if pretrained or weights is not None:
        path = weights or seem_checkpoint_path(spec.checkpoint)
        expected = "a SEEM FocalNet-T checkpoint (keys `backbone.layers.N.blocks.M…`)"
        with reading_weights(weights, expected):
            state = seem_backbone_state_dict(
                torch.load(path, map_location="cpu", weights_only=True)
            )
        load_strictly(model, state, path=path, expected=expected)
    return Backbone(model, _pool, spec.poolings)
