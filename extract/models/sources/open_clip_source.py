"""Models built by open_clip (OpenCLIP, CoCa, BiomedCLIP): the pooled image embedding."""

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from medprobe.cache.errors import ToolkitError
from medprobe.extract.models.backbone import Backbone
from medprobe.extract.models.sources.strict import reading_weights
from medprobe.extract.models.spec import CLIP_MEAN, CLIP_STD, ModelSpec, Preprocessing
from medprobe.extract.models.tokens import (
    TOKENS,
    BlockTaps,
    TokenGrid,
    grid_from_map,
    grid_from_sequence,
)

# open_clip's eval resize modes as ours; "longest" letterboxes, which we do not reproduce.
RESIZE_MODES = {"shortest": "center", "squash": "squash"}


def open_clip_preprocessing(arch: str, tag: str) -> Preprocessing:
    """open_clip's own eval transform: the image size, its resize mode (shorter side then centre
    crop, or squash), mean, std and interpolation (OpenAI's unless the pretrained tag says
    otherwise)."""
    import open_clip

    config = open_clip.get_model_config(arch)
    if config is None:
        raise ToolkitError(f"open_clip knows no architecture {arch!r}; see open_clip.list_models()")
    size = config["vision_cfg"]["image_size"]
    size = size[0] if isinstance(size, (list, tuple)) else size
    pretrained = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    resize_mode = pretrained.get("resize_mode") or "shortest"
    if resize_mode not in RESIZE_MODES:
        raise ToolkitError(
            f"open_clip:{arch}/{tag} is evaluated with resize_mode={resize_mode!r} (letterbox "
            "padding), which this toolkit does not reproduce"
        )
    return Preprocessing(
        input_size=int(size),
        resize_size=int(size),
        mean=tuple(pretrained.get("mean") or CLIP_MEAN),
        std=tuple(pretrained.get("std") or CLIP_STD),
        interpolation=pretrained.get("interpolation") or "bicubic",
        crop=RESIZE_MODES[resize_mode],
    )


def open_clip_spec(name: str) -> ModelSpec:
    """`ARCH/TAG` (e.g. ViT-B-16/laion2b_s34b_b88k) or `hf-hub:ORG/NAME`."""
    arch, _, tag = name.partition("/") if not name.startswith("hf-hub:") else (name, "", "")
    return ModelSpec(
        name=f"open_clip:{name}",
        source="open_clip",
        checkpoint=name,
        preprocessing=open_clip_preprocessing(arch, tag)
        if not name.startswith("hf-hub:")
        else Preprocessing(224, 224, CLIP_MEAN, CLIP_STD),
        poolings=("pooled",),
        reproduces="the model's pooled image embedding (encode_image, before normalisation)",
    )


def _pool(visual, images, tokens: tuple[BlockTaps, Callable[[torch.Tensor], TokenGrid]]):
    """What `encode_image(images, normalize=False)` returns: the image tower's pooled output
    (CoCa's tower returns its token embeddings beside it, which the embedding does not use);
    and the token grid, read by a hook from the same pass (`_token_reader`)."""
    taps, read = tokens
    taps.take()  # nothing left over from a pass that failed (a CUDA OOM retried smaller)
    out = visual(images)
    (token_output,) = taps.take()
    # Read only when asked for: the norm over every token is work a run without tokens skips.
    return {
        "pooled": out[0] if isinstance(out, tuple) else out,
        TOKENS: partial(read, token_output),
    }


def _token_reader(visual) -> tuple[BlockTaps, Callable[[torch.Tensor], TokenGrid]]:
    """A hook on the module of the image tower whose output holds its tokens, and how to read
    them: a ViT tower's transformer output (class token then patches; through `ln_post` where
    that norm acts on tokens, i.e. without CoCa's attentional pooler), a timm trunk's final
    norm, a ModifiedResNet's last stage."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        norm = (
            visual.ln_post if visual.attn_pool is None and not visual.final_ln_after_pool else None
        )

        def read(x: torch.Tensor) -> TokenGrid:
            return grid_from_sequence(x if norm is None else norm(x), num_prefix_tokens=1)

        return BlockTaps([visual.transformer]), read
    if isinstance(visual, TimmModel) and hasattr(visual.trunk, "num_prefix_tokens"):
        prefix = visual.trunk.num_prefix_tokens
        return BlockTaps([visual.trunk.norm]), partial(grid_from_sequence, num_prefix_tokens=prefix)
    if isinstance(visual, ModifiedResNet):
        return BlockTaps([visual.layer4]), grid_from_map
    raise ToolkitError(f"open_clip image tower {type(visual).__name__} has no known token grid")


def build_open_clip(spec: ModelSpec, *, weights: Path | None, pretrained: bool) -> Backbone:
    """open_clip.create_model with the tag, or a local checkpoint file (`--weights FILE`);
    the image tower of the loaded model."""
    import open_clip

    if spec.checkpoint.startswith("hf-hub:"):
        arch, tag = spec.checkpoint, None
    else:
        arch, _, tag = spec.checkpoint.partition("/")
    source = str(weights) if weights is not None else (tag if pretrained else None)
    try:
        # The default device, so an architecture-only build on `torch.device("meta")` (costs,
        # `--check` of the big entries) allocates nothing; open_clip would move it to cpu.
        with reading_weights(weights, f"an open_clip state dict of {arch}"):
            model = open_clip.create_model(
                arch, pretrained=source or None, device=torch.get_default_device()
            )
    except (OSError, RuntimeError, ValueError) as error:  # the hub's weights
        repo = _hub_repo(arch, tag)
        fetch = f"Run `hf download {repo}`" if repo else "Fetch its checkpoint"
        raise ToolkitError(
            f"could not load {spec.name} ({spec.checkpoint}). Offline? {fetch} once "
            "on a machine with internet and copy ~/.cache/huggingface, or pass --weights FILE "
            f"(an open_clip state dict). Cause: {error}"
        ) from error
    # Only the image tower is kept: the text tower (and CoCa's decoder) would hold GPU memory
    # that no image embedding uses.
    pool = partial(_pool, tokens=_token_reader(model.visual))
    return Backbone(model.visual, pool, spec.poolings)


def _hub_repo(arch: str, tag: str | None) -> str | None:
    """The Hugging Face repo open_clip reads `arch`/`tag` from, for the offline hint."""
    import open_clip

    if arch.startswith("hf-hub:"):
        return arch.removeprefix("hf-hub:")
    repo = open_clip.get_pretrained_cfg(arch, tag or "").get("hf_hub", "")
    return repo.strip("/") or None
