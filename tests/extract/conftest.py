"""Tiny models and small image folders written as real files, for fast extraction tests."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medprobe.extract.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, Preprocessing

TINY_VIT_KWARGS = {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}


def tiny_vit_spec(name: str = "tiny-vit", *, input_size: int = 32, **changes) -> ModelSpec:
    """A 1-block ViT at 32 px built by timm from a config: the real code path, in milliseconds."""
    fields = dict(
        name=name,
        source="timm",
        checkpoint="vit_tiny_patch16_224",
        preprocessing=Preprocessing(input_size, input_size + 4, IMAGENET_MEAN, IMAGENET_STD),
        poolings=("cls", "mean"),
        build_kwargs={**TINY_VIT_KWARGS, "img_size": input_size},
    )
    fields.update(changes)
    return ModelSpec(**fields)


def write_folder_dataset(
    root: Path,
    *,
    n_per_class: int = 6,
    classes=("benign", "malignant"),
    size: tuple[int, int] = (40, 48),
) -> Path:
    """<root>/<class>/<i>.png, each class a different mean colour plus noise."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            pixels = rng.normal(80 + 90 * label, 30, size=(*size[::-1], 3)).clip(0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    return write_folder_dataset(tmp_path / "images")


@pytest.fixture
def tiny_vit_weights(tmp_path) -> Path:
    """A local checkpoint file for the tiny ViT: a plain state dict, as users download them."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=0, **TINY_VIT_KWARGS
    )
    path = tmp_path / "tiny_vit.pth"
    torch.save(model.state_dict(), path)
    return path


TEST_VIT = "timm:test_vit.r160_in1k"


@pytest.fixture
def test_vit_weights(tmp_path) -> Path:
    """A checkpoint for timm's smallest ViT, which the CLI reaches by name (`TEST_VIT` with
    --weights): fixed weights, so separate processes compute the same embeddings."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_vit.r160_in1k", pretrained=False, num_classes=0)
    path = tmp_path / "test_vit.pth"
    torch.save(model.state_dict(), path)
    return path


def assert_matches_single_run(path: Path, single: Path) -> None:
    """Same key, ids, labels, splits and skipped records as `single`; embeddings equal within
    float16 rounding (another process batches, and so rounds float32 sums, its own way)."""
    from medprobe.cache import open_store

    store, reference = open_store(path), open_store(single)
    assert store.key == reference.key and store.splits == reference.splits
    assert store.skipped() == reference.skipped()
    for split in reference.splits:
        assert store.ids(split).tolist() == reference.ids(split).tolist()
        np.testing.assert_array_equal(store.labels(split), reference.labels(split))
        for pooling in reference.poolings:
            np.testing.assert_allclose(
                store.embeddings(split, pooling),
                reference.embeddings(split, pooling),
                rtol=2e-3,
                atol=1e-3,
            )
