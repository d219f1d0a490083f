"""VMamba-S/B: the official checkpoints' parameter names, strict loading through the source, the
pure scan against the reference loop, and what the embedding is."""

import dataclasses

import pytest
import torch

from medprobe.cache import ToolkitError
from medprobe.extract.models import build_backbone, resolve_model
from medprobe.extract.models.selective_scan import (
    cuda_selective_scan,
    selective_scan,
    selective_scan_reference,
    selective_scan_torch,
)
from medprobe.extract.models.sources import vmamba_source
from medprobe.extract.models.spec import IMAGENET_MEAN, IMAGENET_STD
from medprobe.extract.models.vmamba import VSSM, cross_merge, cross_scan

TINY = {"dims": 8, "depths": (1, 1, 2, 1)}


def official_shapes(dims: int, depths: tuple[int, ...], num_classes: int) -> dict[str, tuple]:
    """Every key and shape of the official `VSSM` state dict for the v2 release configuration
    (classification/models/vmamba.py: patchembed v2, downsample v3, ln2d, forward type
    v05_noz, d_state 1, ssm_ratio 2, dt rank ceil(dim/16), conv without bias, MLP ratio 4)."""
    shapes: dict[str, tuple] = {
        "patch_embed.0.weight": (dims // 2, 3, 3, 3),
        "patch_embed.0.bias": (dims // 2,),
        "patch_embed.2.weight": (dims // 2,),
        "patch_embed.2.bias": (dims // 2,),
        "patch_embed.5.weight": (dims, dims // 2, 3, 3),
        "patch_embed.5.bias": (dims,),
        "patch_embed.7.weight": (dims,),
        "patch_embed.7.bias": (dims,),
    }
    for i, depth in enumerate(depths):
        dim = dims * 2**i
        inner, rank = 2 * dim, -(-dim // 16)
        for j in range(depth):
            block = f"layers.{i}.blocks.{j}"
            shapes |= {
                f"{block}.norm.weight": (dim,),
                f"{block}.norm.bias": (dim,),
                f"{block}.op.x_proj_weight": (4, rank + 2, inner),
                f"{block}.op.dt_projs_weight": (4, inner, rank),
                f"{block}.op.dt_projs_bias": (4, inner),
                f"{block}.op.A_logs": (4 * inner, 1),
                f"{block}.op.Ds": (4 * inner,),
                f"{block}.op.in_proj.weight": (inner, dim),
                f"{block}.op.conv2d.weight": (inner, 1, 3, 3),
                f"{block}.op.out_norm.weight": (inner,),
                f"{block}.op.out_norm.bias": (inner,),
                f"{block}.op.out_proj.weight": (dim, inner),
                f"{block}.norm2.weight": (dim,),
                f"{block}.norm2.bias": (dim,),
                f"{block}.mlp.fc1.weight": (4 * dim, dim),
                f"{block}.mlp.fc1.bias": (4 * dim,),
                f"{block}.mlp.fc2.weight": (dim, 4 * dim),
                f"{block}.mlp.fc2.bias": (dim,),
            }
        if i < len(depths) - 1:
            shapes |= {
                f"layers.{i}.downsample.1.weight": (2 * dim, dim, 3, 3),
                f"layers.{i}.downsample.1.bias": (2 * dim,),
                f"layers.{i}.downsample.3.weight": (2 * dim,),
                f"layers.{i}.downsample.3.bias": (2 * dim,),
            }
    last = dims * 2 ** (len(depths) - 1)
    shapes |= {"classifier.norm.weight": (last,), "classifier.norm.bias": (last,)}
    if num_classes:
        shapes["classifier.head.weight"] = (num_classes, last)
        shapes["classifier.head.bias"] = (num_classes,)
    return shapes


def state_shapes(model: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def tiny_spec(name: str = "vmamba-s"):
    return dataclasses.replace(resolve_model(name), build_kwargs=TINY)


def release_format(model: VSSM) -> dict:
    """What the release file holds: the state dict, with the ImageNet head, under `model`."""
    state = model.state_dict()
    last = model.num_features
    state["classifier.head.weight"] = torch.zeros(1000, last)
    state["classifier.head.bias"] = torch.zeros(1000)
    return {"model": state}


@pytest.mark.parametrize(
    ("name", "dims", "n_parameters"),
    # Counted on the official VSSM (vmamba_small_s2l15 / vmamba_base_s2l15); README: 50M, 89M.
    [("vmamba-s", 96, 50_147_752), ("vmamba-b", 128, 88_557_800)],
)
def test_real_configurations_have_the_official_names_and_shapes(name, dims, n_parameters):
    spec = resolve_model(name)
    with torch.device("meta"):
        model = VSSM(**dict(spec.build_kwargs), num_classes=1000)
    assert state_shapes(model) == official_shapes(dims, (2, 2, 15, 2), 1000)
    assert sum(p.numel() for p in model.parameters()) == n_parameters
    assert model.num_features == spec.embed_dim == dims * 8


def test_features_only_build_has_no_head_and_runs_at_a_tiny_size():
    model = VSSM(**TINY).eval()
    assert state_shapes(model) == official_shapes(8, (1, 1, 2, 1), 0)
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 64)


def test_release_checkpoint_loads_strictly_through_weights(tmp_path):
    torch.manual_seed(0)
    reference = VSSM(**TINY).eval()
    path = tmp_path / "vssm_small_0229_ckpt_epoch_222.pth"
    torch.save(release_format(reference), path)
    backbone = build_backbone(tiny_spec(), weights=path)
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(backbone(images)["pooled"], reference(images))


def test_a_checkpoint_missing_a_key_is_refused_with_the_path(tmp_path):
    checkpoint = release_format(VSSM(**TINY))
    del checkpoint["model"]["layers.0.blocks.0.op.A_logs"]
    path = tmp_path / "partial.pth"
    torch.save(checkpoint, path)
    with pytest.raises(ToolkitError, match=r"partial\.pth is not a VMamba checkpoint.*A_logs"):
        build_backbone(tiny_spec(), weights=path)


class TrainingConfig:
    """Stands in for the yacs config a training checkpoint pickles beside its weights."""


def test_a_checkpoint_with_pickled_objects_is_not_loaded_blindly(tmp_path):
    path = tmp_path / "ckpt_epoch_10.pth"
    torch.save({**release_format(VSSM(**TINY)), "config": TrainingConfig()}, path)
    with pytest.raises(
        ToolkitError,
        match=r"pickled objects besides tensors \(Unsupported global.*TrainingConfig.*--weights",
    ):
        build_backbone(tiny_spec(), weights=path)


def test_offline_without_the_file_names_the_release_url_and_the_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = (
        r"https://github\.com/MzeroMiko/VMamba/releases/download/%23v2cls/"
        r"vssm_base_0229_ckpt_epoch_237\.pth.*" + str(tmp_path / "hub" / "checkpoints")
    )
    with pytest.raises(ToolkitError, match=expected):
        build_backbone(tiny_spec("vmamba-b"), pretrained=True)


def test_offline_reads_the_file_from_torch_hubs_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    reference = VSSM(**TINY).eval()
    cached = tmp_path / "hub" / "checkpoints" / resolve_model("vmamba-s").checkpoint
    cached.parent.mkdir(parents=True)
    torch.save(release_format(reference), cached)
    images = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        out = build_backbone(tiny_spec(), pretrained=True)(images)["pooled"]
        torch.testing.assert_close(out, reference(images))


def test_online_downloads_the_release_asset_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    requested = []

    def fake_download(url, destination, progress=True):
        requested.append(url)
        torch.save(release_format(VSSM(**TINY)), destination)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = vmamba_source.vmamba_checkpoint_path("vssm_small_0229_ckpt_epoch_222.pth")
    assert requested == [
        "https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/"
        "vssm_small_0229_ckpt_epoch_222.pth"
    ]
    assert path == tmp_path / "hub" / "checkpoints" / "vssm_small_0229_ckpt_epoch_222.pth"
    assert path.is_file()


def test_cross_scan_orders_rows_columns_and_their_reverses():
    x = torch.arange(6.0).view(1, 1, 2, 3)  # [[0, 1, 2], [3, 4, 5]]
    xs = cross_scan(x)[0, :, 0]
    expected = [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5], [5, 4, 3, 2, 1, 0], [5, 2, 4, 1, 3, 0]]
    assert xs.tolist() == expected
    # Each direction is gathered back to its pixel: merging the scanned input gives 4x.
    torch.testing.assert_close(cross_merge(cross_scan(x), 2, 3), 4 * x)


def test_pure_scan_gives_the_reference_loops_embedding():
    torch.manual_seed(2)
    pure = VSSM(**TINY, scan=selective_scan_torch).eval()
    with torch.no_grad():
        # Off the initialisation (norms off identity, larger steps dt): dropping the state
        # carried between chunks then changes the embedding by ~1%, far above the tolerance.
        for value in pure.state_dict().values():
            value.add_(0.2 * torch.randn_like(value))
    loop = VSSM(**TINY, scan=selective_scan_reference).eval()
    loop.load_state_dict(pure.state_dict())
    images = torch.randn(2, 3, 64, 96)  # 16x24 tokens in stage 1: several 64-long chunks
    with torch.inference_mode():
        torch.testing.assert_close(pure(images), loop(images), rtol=1e-4, atol=1e-5)


def test_embedding_is_the_spatial_mean_of_the_last_stage_after_the_classifier_norm():
    backbone = build_backbone(tiny_spec(), pretrained=False)
    encoder = backbone.encoder
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        features = encoder.forward_features(images)  # (2, 64, 2, 2)
        pooled = backbone(images)["pooled"]
    assert features.shape == (2, 64, 2, 2) and pooled.shape == (2, 64)
    # After a LayerNorm over channels (identity affine at init) every position is standardised.
    torch.testing.assert_close(features.mean(1), torch.zeros(2, 2, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, features.mean((2, 3)))


def test_with_a_head_the_model_returns_logits_of_that_pooling():
    model = VSSM(**TINY, num_classes=5).eval()
    images = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        pooled = model.forward_features(images).mean((2, 3))
        torch.testing.assert_close(model(images), model.classifier.head(pooled))


@pytest.mark.parametrize(("name", "embed_dim"), [("vmamba-s", 768), ("vmamba-b", 1024)])
def test_entries_use_the_official_eval_transform(name, embed_dim):
    """classification/data/build.py: Resize(256 / 224 * 224, bicubic), CenterCrop(224),
    ImageNet mean and std."""
    spec = resolve_model(name)
    p = spec.preprocessing
    assert (p.input_size, p.resize_size, p.interpolation, p.crop) == (224, 256, "bicubic", "center")
    assert (p.mean, p.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert spec.source == "vmamba" and spec.poolings == ("pooled",)
    assert spec.embed_dim == embed_dim


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or cuda_selective_scan() is None,
    reason="needs CUDA and mamba_ssm's selective_scan kernel",
)
def test_the_cuda_kernel_gives_the_pure_scans_embedding():
    torch.manual_seed(3)
    fused = VSSM(**TINY, scan=selective_scan).cuda().eval()
    pure = VSSM(**TINY, scan=selective_scan_torch).cuda().eval()
    pure.load_state_dict(fused.state_dict())
    images = torch.randn(2, 3, 64, 96, device="cuda")
    with torch.inference_mode():
        torch.testing.assert_close(fused(images), pure(images), rtol=1e-3, atol=1e-3)
