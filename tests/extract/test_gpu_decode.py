"""Device JPEG decoding: the same pixels as the CPU path within resize tolerance, the same
failure records, and a clear refusal where it cannot run.

The decoder takes its device as an argument, so the whole path (byte-reading workers, batched
decode_jpeg, antialiased resize and crop, CPU fallback) runs here on torchvision's CPU decoder;
the CUDA test repeats the comparison through nvJPEG on a GPU machine.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from medprobe.cache import ToolkitError, open_store
from medprobe.extract.datasets import build_dataset
from medprobe.extract.datasets.images import open_image
from medprobe.extract.gpu_decode import (
    DeviceJpegDecoder,
    EncodedImages,
    check_device_decoding,
    collate_encoded,
    cut_view,
)
from medprobe.extract.loader import DecodedImages, collate
from medprobe.extract.models.spec import HALF, IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from medprobe.extract.pipeline import ExtractionOptions, extract_dataset
from medprobe.extract.transforms import to_model_input
from tests.extract.conftest import tiny_vit_spec

GEOMETRIES = [
    Preprocessing(32, 36, IMAGENET_MEAN, IMAGENET_STD),  # bicubic, centre crop
    Preprocessing(24, 24, HALF, HALF, interpolation="bilinear", crop="squash"),
    Preprocessing(28, 32, HALF, HALF, interpolation="nearest", channels=1),
]


def smooth_photo(width: int, height: int, seed: int, grey: bool = False) -> Image.Image:
    """Smooth structure (what resampling kernels agree on) with a little noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (6, 8, 1 if grey else 3)).astype(np.uint8).squeeze()
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    noisy = base.astype(np.int16) + rng.normal(0, 3, base.shape).astype(np.int16)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Colour and grey JPEGs of several sizes, a PNG, and one file that only looks like a JPEG."""
    root = tmp_path / "mixed"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
    smooth_photo(160, 120, 0).save(root / "a" / "0.jpg", quality=95)
    smooth_photo(120, 160, 1, grey=True).save(root / "a" / "1.jpg", quality=95)
    smooth_photo(200, 90, 2).save(root / "a" / "2.png")
    smooth_photo(160, 120, 3).save(root / "b" / "3.jpg", quality=95)
    smooth_photo(97, 131, 4).save(root / "b" / "4.jpeg", quality=95)
    (root / "b" / "5.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
    return root


def decode_both_ways(dataset, geometries, *, on: torch.device):
    rows = np.arange(len(dataset.rows))
    cpu = collate([DecodedImages(dataset, rows, geometries)[i] for i in rows])
    images = EncodedImages(dataset, rows, geometries)
    device = DeviceJpegDecoder(images, on)(collate_encoded([images[i] for i in rows]))
    return cpu, device


def test_device_resize_matches_pil_on_the_same_decoded_pixels(mixed_folder):
    """Decoded at full size both ways, every geometry agrees to within one grey level."""
    dataset = build_dataset("folder", mixed_folder)
    for row, image_id in enumerate(dataset.rows.ids):
        if not image_id.endswith(("0.jpg", "1.jpg", "4.jpeg")):
            continue
        path = dataset.image_path(row)
        encoded = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        for geometry in GEOMETRIES:
            mode = ImageReadMode.GRAY if geometry.channels == 1 else ImageReadMode.RGB
            on_device = cut_view(decode_jpeg(encoded, mode=mode), geometry)
            on_cpu = to_model_input(open_image(path), geometry)
            assert on_device.shape == on_cpu.shape, (image_id, geometry)
            assert (on_device.int() - on_cpu.int()).abs().max() <= 1, (image_id, geometry)


def test_device_decode_matches_the_cpu_pass_within_resize_tolerance(mixed_folder):
    """The CPU pass decodes large JPEGs at a DCT-reduced scale, so here the two differ by more
    than rounding, yet by a level or two on average, never a shifted or flipped image."""
    dataset = build_dataset("folder", mixed_folder)
    cpu, device = decode_both_ways(dataset, GEOMETRIES, on=torch.device("cpu"))
    assert np.array_equal(cpu.ok, device.ok) and not cpu.ok[-1], "the fake JPEG fails both ways"
    for geometry, cpu_view, device_view in zip(GEOMETRIES, cpu.views, device.views, strict=True):
        assert device_view.shape == cpu_view.shape and device_view.dtype == torch.uint8
        difference = (device_view.int() - cpu_view.int()).abs().float()
        assert difference.mean() < 2.5, (geometry, difference.mean())


def test_a_failed_jpeg_is_recorded_with_its_path_like_the_cpu_path(mixed_folder):
    dataset = build_dataset("folder", mixed_folder)
    cpu, device = decode_both_ways(dataset, GEOMETRIES[:1], on=torch.device("cpu"))
    (position,) = device.failures
    assert "5.jpg" in device.failures[position]
    assert device.failures.keys() == cpu.failures.keys()


def test_a_batch_whose_every_jpeg_fails_is_all_failures(mixed_folder):
    dataset = build_dataset("folder", mixed_folder)
    bad = np.array([dataset.rows.ids.index("b/5.jpg")])
    images = EncodedImages(dataset, bad, GEOMETRIES)
    decoded = DeviceJpegDecoder(images, torch.device("cpu"))(collate_encoded([images[0]]))
    assert decoded.views == [] and not decoded.ok.any()
    assert "5.jpg" in decoded.failures[0]


def test_pngs_and_adapters_that_transform_pixels_are_decoded_by_the_workers(mixed_folder):
    dataset = build_dataset("folder", mixed_folder)
    rows = np.arange(len(dataset.rows))
    items = EncodedImages(dataset, rows, GEOMETRIES)
    png = dataset.rows.ids.index("a/2.png")
    assert isinstance(items[png][1], list), "a PNG arrives as views cut on the worker"
    assert isinstance(items[0][1], torch.Tensor) and items[0][1].dim() == 1, "a JPEG as bytes"
    digits = build_dataset("digits", None)
    assert not digits.reads_plain_files
    assert isinstance(EncodedImages(digits, np.arange(2), GEOMETRIES)[0][1], list)


def test_cut_view_keeps_orientation():
    image = torch.zeros(3, 50, 100, dtype=torch.uint8)
    image[2, :, :10] = 255  # a blue strip on the left
    squashed = cut_view(image, Preprocessing(20, 20, HALF, HALF, crop="squash"))
    assert squashed.shape == (3, 20, 20) and squashed[2, 10, 0] > 200 and squashed[2, 10, -1] < 50


@pytest.mark.parametrize(
    ("geometry", "device", "message"),
    [
        (GEOMETRIES[0], torch.device("cpu"), "needs a CUDA device"),
        (
            Preprocessing(32, 36, HALF, HALF, interpolation="lanczos"),
            torch.device("cuda"),
            "lanczos",
        ),
    ],
)
def test_device_decoding_is_refused_where_it_cannot_run(geometry, device, message):
    with pytest.raises(ToolkitError, match=message):
        check_device_decoding([geometry], device)


def test_extract_with_gpu_decode_on_a_cpu_run_says_what_to_do(folder_dataset, tmp_path):
    dataset = build_dataset("folder", folder_dataset)
    options = ExtractionOptions(device="cpu", decode="gpu", pretrained=False, progress=False)
    with pytest.raises(ToolkitError, match="--decode cpu"):
        extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path / "cache", options=options)
    assert not (tmp_path / "cache").exists(), "refused before any store or journal was opened"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvjpeg_pass_gives_the_embeddings_of_the_cpu_pass(mixed_folder, tmp_path):
    dataset = build_dataset("folder", mixed_folder)
    cpu, device = decode_both_ways(dataset, GEOMETRIES, on=torch.device("cuda"))
    for cpu_view, device_view in zip(cpu.views, device.views, strict=True):
        assert (device_view.cpu().int() - cpu_view.int()).abs().float().mean() < 2.5
    spec = tiny_vit_spec()
    embeddings = {}
    for decode in ("cpu", "gpu"):
        options = ExtractionOptions(
            device="cuda", decode=decode, pretrained=False, progress=False, on_error="skip"
        )
        torch.manual_seed(0)
        (path,) = extract_dataset(
            dataset, [spec], cache_root=tmp_path / decode, options=options
        ).written
        store = open_store(path)
        embeddings[decode] = np.concatenate(
            [store.embeddings(split, "cls") for split in store.splits]
        )
    cosine = (embeddings["cpu"] * embeddings["gpu"]).sum(1) / (
        np.linalg.norm(embeddings["cpu"], axis=1) * np.linalg.norm(embeddings["gpu"], axis=1)
    )
    assert cosine.min() > 0.99


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvjpeg_never_writes_into_memory_queued_kernels_are_still_reading(tmp_path):
    """pytorch/vision#9606: nvJPEG's hardware engine ignores the work queued on its stream. Here
    blocks of exactly a decoded image's size are freed while reads of them are still queued
    behind ~25 ms of GPU work; a decoder on the caller's stream is handed those blocks and
    overwrites them before the reads run."""
    root = tmp_path / "same-size"
    for i in range(16):
        (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        smooth_photo(160, 120, i).save(root / "ab"[i % 2] / f"{i}.jpg", quality=95)
    dataset = build_dataset("folder", root)
    rows = np.arange(len(dataset.rows))
    images = EncodedImages(dataset, rows, GEOMETRIES[:1])
    decoder = DeviceJpegDecoder(images, torch.device("cuda"))
    batch = collate_encoded([images[i] for i in rows])
    expected = decoder(batch).views[0].cpu()
    corrupted = 0
    for _ in range(10):
        blocks = [torch.full((3, 120, 160), 7, dtype=torch.uint8, device="cuda") for _ in range(64)]
        torch.cuda._sleep(50_000_000)
        sums = [block.sum(dtype=torch.int64) for block in blocks]
        del blocks
        decoded = decoder(batch).views[0]
        corrupted += sum(int(total) != 7 * 3 * 120 * 160 for total in sums)
        assert torch.equal(decoded.cpu(), expected)
    assert corrupted == 0
