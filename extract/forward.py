"""Running frozen backbones over the loader's batches without stalling the device.

A forward pass returns its embeddings as `HostEmbeddings` whose copy to the host may still be in
flight, and each store's `StoreFeed` writes a batch only after the next one has been launched. So
the device computes batch k while the host fetches batch k+1 and writes batch k-1, instead of
idling through every write, every fetch and every kernel launch. On the CPU nothing is in flight
and the same code simply runs in order.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from medprobe.cache import StoreWriter
from medprobe.extract.loader import DecodedBatch
from medprobe.extract.models import Backbone, ModelSpec
from medprobe.extract.models.tokens import TOKENS
from medprobe.extract.transforms import normalise_on_device

logger = logging.getLogger(__name__)


@dataclass
class HostEmbeddings:
    """One batch's embeddings per pooling, as chunks on the host; `copied` is the CUDA event
    after which their copies from the device are complete (None: already complete)."""

    chunks: list[dict[str, torch.Tensor]]
    copied: torch.cuda.Event | None = None

    def numpy(self) -> dict[str, np.ndarray]:
        """Waits for the copies (only for them, not for later work on the device)."""
        if self.copied is not None:
            self.copied.synchronize()
        return {p: np.concatenate([c[p].numpy() for c in self.chunks]) for p in self.chunks[0]}


Embedder = Callable[[torch.Tensor], HostEmbeddings]


def to_host(outputs: dict[str, torch.Tensor]) -> HostEmbeddings:
    """Start float32 copies of `outputs` into page-locked host memory (asynchronous from a CUDA
    device, so the caller is not held until the forward pass finishes)."""
    if not any(v.is_cuda for v in outputs.values()):
        return HostEmbeddings([{p: v.to(_host_dtype(p)) for p, v in outputs.items()}])
    host = {}
    for pooling, value in outputs.items():
        host[pooling] = torch.empty(value.shape, dtype=_host_dtype(pooling), pin_memory=True)
        host[pooling].copy_(value, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    return HostEmbeddings([host], copied)


def _host_dtype(output: str) -> torch.dtype:
    """Tokens travel as the float16 they are stored in (half the bytes to copy)."""
    return torch.float16 if output == TOKENS else torch.float32


def pixels_embedder(images: torch.Tensor) -> HostEmbeddings:
    """The pixel cache's 'embedding': the uint8 input itself, flattened to (B, C*H*W)."""
    return HostEmbeddings([{"pixels": images.reshape(len(images), -1).cpu()}])


class MicroBatcher:
    """Runs a backbone on a batch, halving the micro-batch on CUDA out-of-memory and keeping it."""

    def __init__(self, backbone: Backbone, device: torch.device, spec: ModelSpec) -> None:
        self.backbone = backbone
        self.device = device
        self.spec = spec
        self.micro_batch: int | None = None

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> HostEmbeddings:
        size = self.micro_batch or len(images)
        while True:
            try:
                chunks = [self._forward(images[i : i + size]) for i in range(0, len(images), size)]
                break
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                size = max(1, size // 2)
                self.micro_batch = size
                torch.cuda.empty_cache()
                logger.warning(
                    "CUDA out of memory: %s now runs %d images at a time", self.spec.name, size
                )
        # The event of the last chunk follows every earlier copy on the same stream.
        return HostEmbeddings([c for h in chunks for c in h.chunks], chunks[-1].copied)

    def _forward(self, images: torch.Tensor) -> HostEmbeddings:
        on_device = images.to(self.device, non_blocking=True)
        inputs = normalise_on_device(on_device, self.spec.preprocessing, channels_last=True)
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        ):
            outputs = self.backbone(inputs)
        return to_host(outputs)


@dataclass
class _Launched:
    """A batch whose forward pass was launched and whose rows are not written yet."""

    first_row: int
    ok: np.ndarray
    failures: dict[int, str]
    embeddings: HostEmbeddings | None


class StoreFeed:
    """One store's side of a pass: launches each batch's forward pass, and writes the batch
    before it once this one is queued on the device.

    `next_row` counts the rows launched, which run ahead of the rows written by one batch; a
    resumed store starts it at the writer's `next_row`, so rows already stored are not redone.
    """

    def __init__(self, writer: StoreWriter, embed: Embedder, view_index: int) -> None:
        self.writer = writer
        self.embed = embed
        self.view_index = view_index
        self.next_row = writer.next_row
        self._pending: _Launched | None = None

    def launch(self, batch: DecodedBatch) -> None:
        stop = batch.start + len(batch.ok)
        if stop <= self.next_row:
            return
        skip = self.next_row - batch.start  # > 0 only on the first batch of a resumed store
        ok = batch.ok[skip:]
        view = batch.views[self.view_index] if batch.views else None
        embeddings = None
        if ok.any() and view is not None:
            embeddings = self.embed(view[int(batch.ok[:skip].sum()) :])
        failures = {p: r for p, r in batch.failures.items() if p >= self.next_row}
        launched = _Launched(self.next_row, ok, failures, embeddings)
        self.flush()
        self._pending = launched
        self.next_row = stop

    def flush(self) -> None:
        """Write the launched batch, waiting for its embeddings to reach the host."""
        if self._pending is None:
            return
        launched, self._pending = self._pending, None
        layout = self.writer.spec.token_layout
        if launched.embeddings is None:
            embeddings = {p: np.zeros((0, 0), np.float32) for p in self.writer.spec.poolings}
            if layout is not None:
                embeddings[TOKENS] = np.zeros((0, *layout.shape), np.float16)
        else:
            embeddings = launched.embeddings.numpy()
        tokens = embeddings.pop(TOKENS, None)
        self.writer.append(
            launched.first_row, launched.ok, embeddings, launched.failures, tokens=tokens
        )
