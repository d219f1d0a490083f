"""MedMNIST+ download: URL and MD5 from the medmnist package's INFO, served here by a local HTTP
server; a file moves into place only once its MD5 matched, and offline it names what to fetch."""

import functools
import hashlib
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import medmnist
import numpy as np
import pytest

from medprobe.cache import ToolkitError
from medprobe.extract.datasets import build_dataset
from medprobe.extract.datasets.medmnist import LABEL_NAMES, MEDMNIST_TASKS
from tests.extract.datasets.test_options_and_medmnist import write_npz

INFO_TASKS = {
    "multi-class": "multiclass",
    "binary-class": "binary",
    "ordinal-regression": "ordinal",
    "multi-label, binary-class": "multilabel",
}


@pytest.mark.parametrize("flag", sorted(MEDMNIST_TASKS))
def test_our_tables_match_the_authors_info(flag):
    info = medmnist.INFO[flag]
    kind, n_outputs = MEDMNIST_TASKS[flag]
    assert INFO_TASKS[info["task"]] == kind
    names = tuple(info["label"][str(i)] for i in range(len(info["label"])))
    assert names == LABEL_NAMES[flag] and len(names) == n_outputs


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def zenodo(tmp_path, monkeypatch):
    """A local server standing in for Zenodo; `publish` points INFO at one of its files."""
    served = tmp_path / "served"
    served.mkdir()
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def publish(flag: str, size: int, md5: str | None = None) -> str:
        name = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
        path = write_npz(served / name, flag, side=size)
        suffix = "" if size == 28 else f"_{size}"
        url = f"http://127.0.0.1:{server.server_address[1]}/{name}?download=1"
        digest = md5 or hashlib.md5(path.read_bytes()).hexdigest()
        monkeypatch.setitem(
            medmnist.INFO,
            flag,
            {**medmnist.INFO[flag], f"url{suffix}": url, f"MD5{suffix}": digest},
        )
        return url

    yield publish
    server.shutdown()
    server.server_close()


def test_download_fetches_the_file_once_and_reads_it(zenodo, tmp_path):
    zenodo("dermamnist", 64)
    folder = tmp_path / "medmnist"  # does not exist yet: the download creates it
    dataset = build_dataset("medmnist", folder, flag="dermamnist", size=64, download=True)
    assert dataset.options["file"] == "dermamnist_64.npz"
    assert dataset.read_image(0).size == (64, 64) and len(dataset.rows.ids) == 21
    assert sorted(p.name for p in folder.iterdir()) == ["dermamnist_64.npz"]  # no staging left
    # Present now: read without the network, with or without download=true.
    medmnist.INFO["dermamnist"]["url_64"] = "http://127.0.0.1:9/unreachable.npz"
    again = build_dataset("medmnist", folder, flag="dermamnist", size=64, download=True)
    assert np.array_equal(again.rows.labels, dataset.rows.labels)


def test_a_corrupted_download_leaves_nothing_behind(zenodo, tmp_path):
    url = zenodo("breastmnist", 28, md5="0" * 32)
    folder = tmp_path / "medmnist"
    expected = rf"downloaded from {re.escape(url)} does not have the MD5.*\(MD5 0{{32}}\)"
    with pytest.raises(ToolkitError, match=expected):
        build_dataset("medmnist", folder, flag="breastmnist", download=True)
    assert list(folder.iterdir()) == []


def test_offline_names_the_url_md5_and_destination(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = medmnist.INFO["pathmnist"]
    expected = (
        rf"HF_HUB_OFFLINE is set; download {re.escape(info['url_128'])} \(MD5 {info['MD5_128']}\) "
        rf"and put it at {re.escape(str(tmp_path / 'pathmnist_128.npz'))}"
    )
    with pytest.raises(ToolkitError, match=expected):
        build_dataset("medmnist", tmp_path, flag="pathmnist", size=128, download=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"download": True}, "download=true needs flag="),
        ({"flag": "organmnist3d", "download": True}, "unknown 2D subset flag='organmnist3d'"),
        ({"flag": "pathmnist", "size": 96, "download": True}, r"size=96 does not exist"),
    ],
)
def test_download_requests_that_cannot_be_met_say_why(tmp_path, options, message):
    with pytest.raises(ToolkitError, match=message):
        build_dataset("medmnist", tmp_path, **options)
