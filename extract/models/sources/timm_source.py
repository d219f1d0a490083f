"""Models built by timm: DINOv2, MAE, AIMv2, SAM, SAM2 and the ImageNet baselines."""

import logging
from functools import partial
from pathlib import Path

from medprobe.cache.errors import ToolkitError
from medprobe.extract.models.backbone import Backbone, pool_feature_map, pool_tokens
from medprobe.extract.models.sources.strict import reading_weights
from medprobe.extract.models.spec import ModelSpec, Preprocessing, timm_resize_size
from medprobe.extract.models.tokens import (
    MULTILAYER,
    TOKENS,
    BlockTaps,
    grid_from_map,
    grid_from_sequence,
    last_blocks_taps,
    multilayer_feature,
)

logger = logging.getLogger(__name__)


def timm_preprocessing(checkpoint: str) -> Preprocessing:
    """timm's own eval transform for `checkpoint`, from its pretrained config (no download
    needed): input size, floor(input / crop_pct), crop mode, mean, std, interpolation."""
    import timm
    from timm.data import DEFAULT_CROP_PCT

    try:
        config = timm.models.get_pretrained_cfg(checkpoint)
    except RuntimeError as error:
        config = None
        logger.debug("no pretrained cfg for %s: %s", checkpoint, error)
    if config is None:
        close = timm.list_models(f"*{checkpoint.split('.')[0][:12]}*", pretrained=True)[:5]
        raise ToolkitError(f"timm knows no pretrained model {checkpoint!r}; close: {close}")
    crop_mode = config.crop_mode or "center"
    if crop_mode not in ("center", "squash"):
        raise ToolkitError(
            f"timm:{checkpoint} is evaluated with crop_mode={crop_mode!r} (letterbox padding), "
            "which this toolkit does not reproduce; pick a checkpoint with centre or squash crop"
        )
    input_size = int(config.input_size[-1])
    resize_size = timm_resize_size(input_size, float(config.crop_pct or DEFAULT_CROP_PCT))
    if resize_size < input_size:
        raise ToolkitError(
            f"timm:{checkpoint} has crop_pct={config.crop_pct} > 1, so its eval transform pads "
            "the resized image, which this toolkit does not reproduce"
        )
    return Preprocessing(
        input_size=input_size,
        resize_size=resize_size,
        mean=tuple(config.mean),
        std=tuple(config.std),
        interpolation=config.interpolation or "bicubic",
        crop=crop_mode,
    )


def _pool(encoder, images, taps: BlockTaps | None = None):
    """Every pooling and the token grid from `forward_features`; with `taps` on the last four
    blocks, also DINOv2's multi-layer feature (the hooks fire during this same pass)."""
    if taps is not None:
        taps.take()  # nothing left over from a pass that failed (a CUDA OOM retried smaller)
    features = encoder.forward_features(images)
    if features.ndim == 3:
        prefix = getattr(encoder, "num_prefix_tokens", 0)
        pooled = pool_tokens(features, num_prefix_tokens=prefix)
        pooled[TOKENS] = grid_from_sequence(features, num_prefix_tokens=prefix)
        if taps is not None:
            pooled[MULTILAYER] = multilayer_feature(taps.take(), encoder.norm, pooled["mean"])
    else:
        channels_last = getattr(encoder, "output_fmt", "NCHW") == "NHWC"
        pooled = pool_feature_map(features, channels_last=channels_last)
        pooled[TOKENS] = grid_from_map(features, channels_last=channels_last)
    pooled["pooled"] = encoder.forward_head(features, pre_logits=True)
    return pooled


def timm_backbone(model, spec: ModelSpec) -> Backbone:
    """`model` wrapped with its pooling; hooks on its last blocks where a pooling reads them."""
    taps = None
    if MULTILAYER in spec.poolings:
        taps = last_blocks_taps(getattr(model, "blocks", None), spec.name)
    return Backbone(model, partial(_pool, taps=taps), spec.poolings)


def build_timm(spec: ModelSpec, *, weights: Path | None, pretrained: bool) -> Backbone:
    """Build through `timm.create_model`; a local `weights` file goes through timm's own
    pretrained loader (`pretrained_cfg_overlay`), so its checkpoint filters apply exactly as for
    a hub download (original DINOv2 / SAM key names, position-embedding resampling)."""
    import timm

    if weights is not None:
        with reading_weights(weights, f"a {spec.checkpoint} checkpoint timm can load"):
            return timm_backbone(_create_from_file(spec, weights), spec)
    try:
        model = timm.create_model(
            spec.checkpoint, pretrained=pretrained, num_classes=0, **spec.build_kwargs
        )
    except (OSError, ValueError) as error:
        hub_id = getattr(timm.models.get_pretrained_cfg(spec.checkpoint), "hf_hub_id", None)
        raise ToolkitError(
            f"could not load weights for {spec.name} ({spec.checkpoint}): {error}. Offline? Put "
            f"hub id {hub_id!r} in the Hugging Face cache (`hf download {hub_id}` on a "
            "machine with internet, then copy ~/.cache/huggingface), or pass --weights FILE."
        ) from error
    return timm_backbone(model, spec)


def _create_from_file(spec: ModelSpec, weights: Path):
    """The timm model loaded strictly from a local file, with or without its classifier.

    timm loads non-strictly whenever the classifier is dropped (num_classes=0 against a
    pretrained config with classes), so a file of another layout would silently leave the
    model at its random init. Here the file is read as a backbone without classifier first,
    then as the whole model (classifier dropped after loading), both strictly."""
    import timm

    file = str(weights)
    attempts = (
        {"num_classes": 0, "pretrained_cfg_overlay": {"file": file, "num_classes": 0}},
        {"pretrained_cfg_overlay": {"file": file}},
    )
    refusals = []
    for attempt in attempts:
        try:
            model = timm.create_model(
                spec.checkpoint, pretrained=True, **spec.build_kwargs, **attempt
            )
        except RuntimeError as error:  # strict loading: missing, unexpected or mis-shaped keys
            refusals.append(error)
            continue
        model.reset_classifier(0)
        return model
    raise refusals[0]


def timm_spec(checkpoint: str) -> ModelSpec:
    """A spec for any timm model by name; 'pooled' is timm's own head pooling."""
    return ModelSpec(
        name=f"timm:{checkpoint}",
        source="timm",
        checkpoint=checkpoint,
        preprocessing=timm_preprocessing(checkpoint),
        poolings=("pooled", "mean"),
        reproduces="timm's pre-logits pooling, and the mean of the final features",
    )
