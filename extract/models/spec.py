"""What a model entry is: a frozen spec of checkpoint, preprocessing and pooling, one per name."""

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# Standard normalisation constants, named once.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)

POOLINGS = {
    "cls": "the class token after the final norm",
    "mean": "mean of patch tokens (prefix tokens excluded), or spatial mean of a feature map",
    "pooled": "the model's own pooled output (CLIP/CoCa image embedding, CNN global pool)",
    "last4_cls_mean": "DINOv2's linear-eval feature: the class tokens of the last four blocks "
    "(each after the final norm) and the mean patch token, concatenated (5 x D)",
}
# How many D-sized pieces a pooling's vector holds (1 unless listed).
POOLING_WIDTHS = {"last4_cls_mean": 5}


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input tensor.

    crop="center": the image's shorter side is resized to `resize_size` with `interpolation`,
    then centre-cropped to `input_size` (torchvision's Resize(int) + CenterCrop, as timm and
    open_clip evaluate). crop="squash": the whole image is resized to `resize_size` square, then
    centre-cropped to `input_size` (timm's and open_clip's "squash"; no crop when the two are
    equal, as SAM-style encoders and the published studies' 224 px runs see the whole image).
    Grey images are replicated to three channels unless `channels` is 1.
    """

    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop: str = "center"
    channels: int = 3

    def __post_init__(self) -> None:
        if self.crop not in ("center", "squash"):
            raise ValueError(f"crop={self.crop!r}; expected 'center' or 'squash'")
        if self.interpolation not in ("bilinear", "bicubic", "nearest", "lanczos"):
            raise ValueError(f"interpolation={self.interpolation!r} is not supported")
        if self.resize_size < self.input_size:
            raise ValueError(f"resize_size {self.resize_size} < input_size {self.input_size}")

    @property
    def view_key(self) -> tuple[Any, ...]:
        """What the decoded uint8 input depends on; models that share it share one decode.

        Mean and std are absent on purpose: normalisation happens per model on the device.
        """
        return (self.input_size, self.resize_size, self.interpolation, self.crop, self.channels)

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def timm_resize_size(input_size: int, crop_pct: float) -> int:
    """timm's eval transform floors input/crop_pct (224 at 0.9 resizes to 248, not 249)."""
    return math.floor(input_size / crop_pct)


def center_crop_preprocessing(
    input_size: int,
    *,
    crop_pct: float = 0.875,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    interpolation: str = "bicubic",
) -> Preprocessing:
    """The timm convention: resize the shorter side to input/crop_pct, then centre-crop."""
    return Preprocessing(
        input_size=input_size,
        resize_size=timm_resize_size(input_size, crop_pct),
        mean=mean,
        std=std,
        interpolation=interpolation,
    )


@dataclass(frozen=True)
class ModelSpec:
    """One model entry.

    source: which loader builds it ('timm', 'hf', 'open_clip', 'bundled', or a family of ours);
    checkpoint: the loader's id (timm name with tag, HF repo id, 'ARCH/TAG' for open_clip);
    poolings: every pooling stored in one forward pass, the first being the published one;
    build_kwargs: architecture arguments passed to the loader (e.g. img_size for SAM at 224);
    reproduces: which published embedding this entry reads, in one line.
    """

    name: str
    source: str
    checkpoint: str
    preprocessing: Preprocessing
    poolings: tuple[str, ...]
    embed_dim: int | None = None
    build_kwargs: Mapping[str, Any] = field(default_factory=dict)
    reproduces: str = ""

    def __post_init__(self) -> None:
        unknown = [p for p in self.poolings if p not in POOLINGS]
        if unknown or not self.poolings:
            raise ValueError(f"{self.name}: poolings {self.poolings} must be from {list(POOLINGS)}")

    def pooling_dim(self, pooling: str) -> int | None:
        """The size of `pooling`'s vector (embed_dim, or 5 x embed_dim for last4_cls_mean)."""
        if self.embed_dim is None:
            return None
        return POOLING_WIDTHS.get(pooling, 1) * self.embed_dim

    def identity(self, *, pretrained: bool, weights_sha256: str | None) -> dict[str, Any]:
        """The part of a store key this model contributes: random-init runs never share a key."""
        identity: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "checkpoint": self.checkpoint,
            "build_kwargs": dict(self.build_kwargs),
            "pretrained": pretrained,
        }
        if weights_sha256 is not None:
            identity["weights_sha256"] = weights_sha256
        return identity
