"""Shared fixtures: every test gets its own cache root, and nothing reaches a model hub."""

import os

# huggingface_hub reads these once, at import: they must be set before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest

from medprobe.cache.files.root import CACHE_DIR_ENV


@pytest.fixture(autouse=True)
def isolated_cache_root(tmp_path, monkeypatch):
    """Point the default cache root at a per-test folder and keep every hub offline."""
    root = tmp_path / "embeddings"
    monkeypatch.setenv(CACHE_DIR_ENV, str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return root
