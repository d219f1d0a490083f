"""`extract run --tokens N` end to end: token grids stored beside the embeddings from the same
pass, keyed apart, announced with their size, refused when they cannot fit or N is wrong."""

import numpy as np
import pytest

from medprobe.cache import ToolkitError, open_store, verify_store
from medprobe.cache.console import run_app
from medprobe.extract.cli import app
from medprobe.extract.datasets import build_dataset
from medprobe.extract.pipeline import ExtractionOptions, extract_dataset
from tests.extract.conftest import tiny_vit_spec

FAST = dict(num_workers=0, progress=False, batch_size=4, pretrained=False)


def test_tokens_are_stored_from_the_same_pass_as_the_embeddings(folder_dataset, tmp_path):
    dataset = build_dataset("folder", folder_dataset)
    options = ExtractionOptions(tokens=2, **FAST)
    (path,) = extract_dataset(
        dataset, [tiny_vit_spec()], cache_root=tmp_path, options=options
    ).written
    assert verify_store(path) == []
    store = open_store(path)
    assert store.token_layout == {"grid": (2, 2), "prefix_tokens": 1}  # 4 x 4 patches pooled
    assert store.token_shape == (5, 32) and store.spec["tokens"]["max_side"] == 2
    for split in store.splits:
        tokens = store.tokens(split, slice(None))
        # Token 0 is the class token the `cls` pooling stores; the four cells, each the mean of
        # 2 x 2 patches, average to the `mean` pooling.
        np.testing.assert_allclose(tokens[:, 0], store.embeddings(split, "cls"), atol=2e-2)
        np.testing.assert_allclose(
            tokens[:, 1:].mean(1), store.embeddings(split, "mean"), atol=2e-2
        )


def test_tokens_are_keyed_and_a_run_without_them_is_unchanged(folder_dataset, tmp_path):
    dataset = build_dataset("folder", folder_dataset)
    plain = extract_dataset(
        dataset, [tiny_vit_spec()], cache_root=tmp_path, options=ExtractionOptions(**FAST)
    ).written[0]
    assert not open_store(plain).has_tokens
    with_tokens = extract_dataset(
        dataset, [tiny_vit_spec()], cache_root=tmp_path, options=ExtractionOptions(tokens=2, **FAST)
    )
    assert with_tokens.written and with_tokens.written[0] != plain
    other_side = extract_dataset(
        dataset, [tiny_vit_spec()], cache_root=tmp_path, options=ExtractionOptions(tokens=4, **FAST)
    )
    assert other_side.written and other_side.written[0] not in (plain, with_tokens.written[0])
    again = extract_dataset(
        dataset, [tiny_vit_spec()], cache_root=tmp_path, options=ExtractionOptions(tokens=2, **FAST)
    )
    assert again.written == [] and again.skipped_complete == with_tokens.written
    # Embeddings do not depend on whether tokens were stored beside them.
    np.testing.assert_array_equal(
        open_store(plain).embeddings("train", "cls"),
        open_store(with_tokens.written[0]).embeddings("train", "cls"),
    )


def test_the_plan_states_bytes_per_image_and_refuses_what_the_disk_cannot_hold(
    folder_dataset, tmp_path, monkeypatch, caplog
):
    dataset = build_dataset("folder", folder_dataset)
    caplog.set_level("INFO", logger="medprobe.extract.pipeline")
    options = ExtractionOptions(tokens=2, **FAST)
    extract_dataset(dataset, [tiny_vit_spec()], cache_root=tmp_path / "ok", options=options)
    # (1 + 2 x 2) x 32 float16 tokens + 2 x 32 float16 embeddings = 448 B, for 12 images.
    assert "tiny-vit: tokens 1 + 2x2 of 32 float16, 448 B per image" in caplog.text
    assert "12 images -> a store of about 5.2 KiB" in caplog.text
    monkeypatch.setattr("medprobe.cache.files.disk.free_bytes", lambda path: 1000)
    root = tmp_path / "full"
    with pytest.raises(ToolkitError, match=r"needs about 10.5 KiB and 1000 B is free.*--tokens"):
        extract_dataset(dataset, [tiny_vit_spec()], cache_root=root, options=options)
    assert not root.exists() or not any(root.rglob("*")), "nothing half-written"


@pytest.mark.parametrize("value", ["0", "100000", "-3"])
def test_a_bad_token_side_is_one_line_and_exit_2(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_code:
        run_app(
            app,
            ["run", "--model", "resnet50", "--dataset", "digits", "--tokens", value,
             "--cache-dir", str(tmp_path)],
        )  # fmt: skip
    assert exit_code.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"--tokens {value}" in error and "from 1 to 64" in error
    assert not any(tmp_path.rglob("*"))
