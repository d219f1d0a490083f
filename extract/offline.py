"""The toolkit's one offline switch: HF_HUB_OFFLINE.

huggingface_hub (and through it timm, transformers and open_clip) already obeys it; our own
downloads (VMamba's GitHub release assets, MedMNIST's Zenodo files) obey it too, so one variable
stops every network access and turns it into an error naming the file to fetch by hand. Where no
network is reachable, `hub_access` turns the same switch on for one model load, so that the error
comes at once instead of after a minute of retries.
"""

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)


def is_offline() -> bool:
    """huggingface_hub's reading of HF_HUB_OFFLINE."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


# How long the one reachability probe may take before a hub counts as unreachable.
HUB_PROBE_SECONDS = 3.0
# Behind a proxy a direct connection says nothing about the hub: no probe, the hub's own rules.
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def unreachable_reason(url: str, timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """None when a TCP connection to `url`'s host opens within `timeout` seconds, else why not.
    The attempt runs in a thread joined with the timeout, since a name lookup takes no timeout."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as error:
            outcome.append(f"{host}:{port}: {error.strerror or error}")

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"{host}:{port}: no answer within {timeout:g} s"


@contextmanager
def hub_access() -> Iterator[str | None]:
    """Within the block, a Hugging Face hub download (timm, transformers, open_clip) either
    may use the network or fails at once from the local cache; yields why it may not (None when
    it may).

    Offline already (HF_HUB_OFFLINE), nothing is probed. Otherwise the hub is probed once; when
    it cannot be reached, the hubs are switched offline for the block (and back after), so a
    missing checkpoint is the useful error in a second, not after huggingface_hub's five retries
    (about a minute, `Retrying in 8s [Retry 5/5]`).
    """
    from huggingface_hub import constants

    if is_offline() or constants.HF_HUB_OFFLINE:
        yield "HF_HUB_OFFLINE is set"
        return
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        yield None
        return
    reason = unreachable_reason(constants.ENDPOINT)
    if reason is None:
        yield None
        return
    logger.info("the hub is not reachable (%s): loading from the local cache only", reason)
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # our own downloads read the variable (is_offline)
    constants.HF_HUB_OFFLINE = True  # huggingface_hub read it at import: its switch is this
    try:
        yield f"no network: {reason}"
    finally:
        constants.HF_HUB_OFFLINE = False
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before
