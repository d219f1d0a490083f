"""A model whose weights are not in the local cache fails at once when no hub is reachable: one
short probe, then the useful error, never huggingface_hub's minute of retries."""

import os
import socket

import pytest
from huggingface_hub import constants

import medprobe.extract.offline as offline
from medprobe.cache.errors import ToolkitError
from medprobe.extract.models import build_backbone, resolve_model


@pytest.fixture
def connections(monkeypatch):
    """Every TCP connection attempted (the probe's and the hub client's: httpcore opens its
    sockets through socket.create_connection), as (host, port)."""
    attempted = []
    original = socket.create_connection

    def counting(address, *args, **kwargs):
        attempted.append(tuple(address))
        return original(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counting)
    return attempted


@pytest.fixture
def online(monkeypatch):
    """As a user without HF_HUB_OFFLINE: the switch off, no proxy."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *offline.PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on: a connection is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_hub_fails_at_once_with_the_useful_error(
    online, connections, closed_port, monkeypatch, caplog
):
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port}")
    with pytest.raises(ToolkitError) as refused:
        build_backbone(resolve_model("timm:resnet10t.c3_in1k"), pretrained=True)
    message = str(refused.value)
    assert f"no network: 127.0.0.1:{closed_port}: Connection refused" in message
    assert "Put hub id 'timm/resnet10t.c3_in1k' in the Hugging Face cache" in message
    assert connections == [("127.0.0.1", closed_port)], "one probe, and no download attempt"
    assert "Retrying in" not in caplog.text
    assert constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ, "restored"


def test_with_hf_hub_offline_nothing_is_probed(connections, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with offline.hub_access() as reason:
        assert reason == "HF_HUB_OFFLINE is set"
    assert connections == []


def test_behind_a_proxy_the_hub_is_left_to_its_own_rules(online, connections, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    with offline.hub_access() as reason:
        assert reason is None and constants.HF_HUB_OFFLINE is False
    assert connections == []


def test_a_reachable_hub_is_left_online(online, connections, monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        with offline.hub_access() as reason:
            assert reason is None and constants.HF_HUB_OFFLINE is False
    assert connections == [("127.0.0.1", port)]


def test_random_weights_and_local_files_probe_nothing(online, connections, tmp_path):
    build_backbone(resolve_model("timm:resnet10t.c3_in1k"), pretrained=False)
    assert connections == []
