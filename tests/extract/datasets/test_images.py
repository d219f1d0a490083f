"""Image decoding: DICOM windowing, reduced JPEG decode, truncated files."""

import shutil

import numpy as np
import pytest
from PIL import Image

from medprobe.cache import ToolkitError
from medprobe.extract.datasets import build_dataset
from medprobe.extract.datasets.images import open_image


@pytest.fixture
def ct_dicom(tmp_path):
    """pydicom's bundled CT slice (int16, no stored window), as a real-image smoke test."""
    pydicom_data = pytest.importorskip("pydicom.data")
    source = pydicom_data.get_testdata_file("CT_small.dcm")
    target = tmp_path / "scans" / "ct" / "slice.dcm"
    target.parent.mkdir(parents=True)
    shutil.copy(source, target)
    return target


def test_dicom_is_windowed_to_8_bit_grey(ct_dicom):
    image = open_image(ct_dicom)
    pixels = np.asarray(image)
    assert image.mode == "L" and image.size == (128, 128)
    assert pixels.min() == 0 and pixels.max() == 255  # the percentile window spans 0..255


def test_stored_window_is_used_and_monochrome1_is_inverted(ct_dicom, tmp_path):
    import pydicom

    dataset = pydicom.dcmread(ct_dicom)
    dataset.WindowCenter, dataset.WindowWidth = 40, 400
    normal_path = tmp_path / "windowed.dcm"
    dataset.save_as(normal_path)
    dataset.PhotometricInterpretation = "MONOCHROME1"
    inverted_path = tmp_path / "inverted.dcm"
    dataset.save_as(inverted_path)
    normal = np.asarray(open_image(normal_path), dtype=int)
    inverted = np.asarray(open_image(inverted_path), dtype=int)
    assert np.array_equal(normal, 255 - inverted)


def test_folder_dataset_reads_dicom(ct_dicom):
    dataset = build_dataset("folder", ct_dicom.parents[1])
    assert dataset.read_image(0).size == (128, 128)


def test_reduced_jpeg_decode_keeps_the_needed_size(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 2000), (10, 20, 30)).save(path)
    assert open_image(path).size == (3000, 2000)
    reduced = open_image(path, min_side=256)
    assert min(reduced.size) >= 256 and reduced.size[0] < 3000


def test_truncated_and_garbage_files_fail_naming_the_file(tmp_path):
    path = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path)
    path.write_bytes(path.read_bytes()[:80])
    with pytest.raises(ToolkitError, match=r"cut\.png"):
        open_image(path)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a dicom")
    with pytest.raises(ToolkitError, match=r"broken\.dcm: cannot decode DICOM"):
        open_image(broken)
