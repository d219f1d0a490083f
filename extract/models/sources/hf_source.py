"""Models built by Hugging Face transformers (BLIP's image encoder, RAD-DINO, any hf: name).

`hf:ORG/NAME` resolves through the hub cache, so HF_HUB_OFFLINE=1 works once a model was
downloaded; a local directory written by `save_pretrained` works anywhere.
"""

import json
from functools import partial
from pathlib import Path
from types import MappingProxyType

from medprobe.cache.errors import ToolkitError
from medprobe.extract.models.backbone import Backbone, pool_feature_map, pool_tokens
from medprobe.extract.models.sources.strict import reading_weights
from medprobe.extract.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, Preprocessing
from medprobe.extract.models.tokens import (
    MULTILAYER,
    TOKENS,
    BlockTaps,
    grid_from_map,
    grid_from_sequence,
    last_blocks_taps,
    multilayer_feature,
)
from medprobe.extract.offline import hub_access

# PIL resample codes as transformers stores them in preprocessor_config.json.
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}

# The architectures of the registry's hf entries (model_type, config arguments), so that an
# architecture-only build (`extract models --check`, parameter and FLOP counts) needs no hub.
ARCHITECTURES = MappingProxyType(
    {
        # BLIP's ViT-B/16 image tower at 384 px: BlipVisionConfig's defaults are that model.
        "Salesforce/blip-image-captioning-base": ("blip_vision_model", {"image_size": 384}),
        # RAD-DINO: a DINOv2 ViT-B/14 at 518 px (layer scale, no registers).
        "microsoft/rad-dino": (
            "dinov2",
            {"image_size": 518, "patch_size": 14, "hidden_size": 768, "num_hidden_layers": 12},
        ),
    }
)


def _offline_hint(repo: str) -> str:
    return (
        f"Offline? Download it once with `hf download {repo}` on a machine with internet and "
        "copy ~/.cache/huggingface, or pass a local save_pretrained directory."
    )


def read_preprocessor_config(repo_or_dir: str) -> dict:
    """The repo's preprocessor_config.json, from a local directory or the hub (cache)."""
    local = Path(repo_or_dir)
    if local.is_dir():
        path = local / "preprocessor_config.json"
    else:
        from huggingface_hub import hf_hub_download

        with hub_access() as offline:
            try:
                path = Path(hf_hub_download(repo_or_dir, "preprocessor_config.json"))
            except Exception as error:  # the hub raises several types for "not reachable/not found"
                why = f"{offline}; " if offline else ""
                raise ToolkitError(
                    f"no preprocessor config for {repo_or_dir!r} ({why}{error}). "
                    f"{_offline_hint(repo_or_dir)}"
                ) from error
    if not path.is_file():
        raise ToolkitError(
            f"{path} is missing: an hf model directory needs the preprocessor "
            "config saved beside the weights (processor.save_pretrained)"
        )
    return json.loads(path.read_text())


def hf_preprocessing(config: dict) -> Preprocessing:
    """Size, crop, mean, std and interpolation from an image processor's config."""
    size = config.get("size", 224)
    if isinstance(size, dict):
        size = size.get("shortest_edge") or size.get("height") or 224
    crop = config.get("crop_size", size)
    if isinstance(crop, dict):
        crop = crop.get("height") or size
    center_crop = bool(config.get("do_center_crop", False))
    input_size = int(crop if center_crop else size)
    return Preprocessing(
        input_size=input_size,
        resize_size=int(size) if center_crop else input_size,
        mean=tuple(config.get("image_mean", IMAGENET_MEAN)),
        std=tuple(config.get("image_std", IMAGENET_STD)),
        interpolation=PIL_RESAMPLE.get(int(config.get("resample", 3)), "bicubic"),
        crop="center" if center_crop else "squash",
    )


def hf_spec(repo_or_dir: str) -> ModelSpec:
    """A spec for any transformers vision model: CLS and patch-token mean of the last layer."""
    return ModelSpec(
        name=f"hf:{repo_or_dir}",
        source="hf",
        checkpoint=repo_or_dir,
        preprocessing=hf_preprocessing(read_preprocessor_config(repo_or_dir)),
        poolings=("cls", "mean"),
        reproduces="last hidden state: the class token, and the mean of the patch tokens",
    )


def _pool(encoder, images, taps: BlockTaps | None = None):
    """Every pooling and the token grid from the last hidden state; with `taps` on the last four
    layers, also DINOv2's multi-layer feature (the hooks fire during this same pass)."""
    if taps is not None:
        taps.take()  # nothing left over from a pass that failed (a CUDA OOM retried smaller)
    outputs = encoder(pixel_values=images)
    hidden = outputs.last_hidden_state
    if hidden.ndim == 4:  # convolutional encoders: (B, C, H, W)
        pooled = pool_feature_map(hidden)
        pooled[TOKENS] = grid_from_map(hidden)
    else:
        prefix = 1 + int(getattr(encoder.config, "num_register_tokens", 0) or 0)
        pooled = pool_tokens(hidden, num_prefix_tokens=prefix)
        pooled[TOKENS] = grid_from_sequence(hidden, num_prefix_tokens=prefix)
        if taps is not None:
            pooled[MULTILAYER] = multilayer_feature(
                taps.take(), _final_norm(encoder), pooled["mean"]
            )
    if getattr(outputs, "pooler_output", None) is not None:
        pooled["pooled"] = outputs.pooler_output.flatten(1)
    return pooled


def _final_norm(encoder):
    """The norm the last hidden state passed through (DINOv2's `layernorm`, ViT-style
    `post_layernorm`)."""
    for name in ("layernorm", "post_layernorm"):
        if hasattr(encoder, name):
            return getattr(encoder, name)
    raise ValueError(f"{type(encoder).__name__} has no final norm to read its blocks through")


def _hf_backbone(encoder, spec: ModelSpec) -> Backbone:
    """`encoder` wrapped with its pooling; hooks on its last layers where a pooling reads them."""
    taps = None
    if MULTILAYER in spec.poolings:
        layers = getattr(getattr(encoder, "encoder", None), "layer", None)
        taps = last_blocks_taps(layers, spec.name)
    return Backbone(encoder, partial(_pool, taps=taps), spec.poolings)


def _model_from_config(config):
    """AutoModel, or for a tower config AutoModel does not map (BlipVisionConfig) the model
    class of the same name (BlipVisionModel)."""
    import transformers

    try:
        return transformers.AutoModel.from_config(config)
    except ValueError:
        return getattr(transformers, type(config).__name__.replace("Config", "Model"))(config)


def build_hf(spec: ModelSpec, *, weights: Path | None, pretrained: bool) -> Backbone:
    """AutoModel from the hub id or a local directory (`--weights DIR`); composite models
    (BLIP, CLIP) contribute their `vision_model` only."""
    from transformers import AutoConfig, AutoModel

    source = str(weights) if weights is not None else spec.checkpoint
    try:
        if weights is not None:
            with reading_weights(weights, "a save_pretrained folder transformers can load"):
                model = AutoModel.from_pretrained(source)
        elif pretrained:
            model = AutoModel.from_pretrained(source)
        elif spec.checkpoint in ARCHITECTURES:
            model_type, arguments = ARCHITECTURES[spec.checkpoint]
            model = _model_from_config(AutoConfig.for_model(model_type, **arguments))
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(source))
    except OSError as error:
        raise ToolkitError(
            f"could not load {spec.name} from {source!r}: {error}. {_offline_hint(spec.checkpoint)}"
        ) from error
    return _hf_backbone(getattr(model, "vision_model", model), spec)
