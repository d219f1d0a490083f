"""Feeding stores one batch behind the device: order of writes, resume inside a batch, results."""

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medprobe.extract.forward import HostEmbeddings, MicroBatcher, StoreFeed, to_host
from medprobe.extract.loader import DecodedBatch
from medprobe.extract.models import build_backbone
from tests.extract.conftest import tiny_vit_spec


@dataclass
class RecordingWriter:
    """The part of StoreWriter a feed uses, recording each append."""

    next_row: int = 0
    appends: list[tuple[int, list[bool], np.ndarray, dict[int, str]]] = field(default_factory=list)
    spec: SimpleNamespace = field(
        default_factory=lambda: SimpleNamespace(poolings=("sum",), token_layout=None)
    )

    def append(self, start, ok, embeddings, failures, tokens=None) -> None:
        assert tokens is None
        self.appends.append((start, list(ok), embeddings["sum"], dict(failures)))
        self.next_row = start + len(ok)


def sum_embedder(images: torch.Tensor) -> HostEmbeddings:
    return HostEmbeddings([{"sum": images.flatten(1).float().sum(1, keepdim=True)}])


def batch(start: int, values: list[int | None]) -> DecodedBatch:
    """Positions start.. with one-pixel images of `values`; None is a failed decode."""
    ok = np.array([v is not None for v in values])
    view = torch.tensor([v for v in values if v is not None], dtype=torch.uint8).view(-1, 1, 1, 1)
    failures = {start + i: f"{start + i}: bad" for i, v in enumerate(values) if v is None}
    return DecodedBatch(start, ok, [view], failures)


def test_each_batch_is_written_once_the_next_is_launched_and_flush_writes_the_last():
    writer = RecordingWriter()
    feed = StoreFeed(writer, sum_embedder, view_index=0)
    feed.launch(batch(0, [1, 2]))
    assert writer.appends == [] and feed.next_row == 2
    feed.launch(batch(2, [3, None]))
    assert [a[0] for a in writer.appends] == [0]
    feed.flush()
    feed.flush()  # nothing pending: no second write
    starts, oks, sums, failures = zip(*writer.appends, strict=True)
    assert starts == (0, 2) and oks == ([True, True], [True, False])
    assert sums[1].tolist() == [[3.0]] and failures[1] == {3: "3: bad"}


def test_a_store_resumed_inside_a_batch_gets_only_its_missing_rows():
    writer = RecordingWriter(next_row=3)
    feed = StoreFeed(writer, sum_embedder, view_index=0)
    feed.launch(batch(0, [10, 11]))  # entirely stored already
    feed.launch(batch(2, [None, 13, 14]))  # row 2 stored (it had failed), rows 3 and 4 are not
    feed.flush()
    ((start, ok, sums, failures),) = writer.appends
    assert start == 3 and ok == [True, True] and sums.tolist() == [[13.0], [14.0]]
    assert failures == {}


def test_a_batch_that_failed_entirely_is_written_as_failures():
    writer = RecordingWriter()
    feed = StoreFeed(writer, sum_embedder, view_index=0)
    feed.launch(batch(0, [None, None]))
    feed.flush()
    ((start, ok, sums, failures),) = writer.appends
    assert start == 0 and ok == [False, False]
    assert sums.shape == (0, 0) and sorted(failures) == [0, 1]


def test_micro_batches_concatenate_to_the_full_batch_result():
    spec = tiny_vit_spec()
    torch.manual_seed(0)
    backbone = build_backbone(spec, pretrained=False).eval()
    images = torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8)
    whole = MicroBatcher(backbone, torch.device("cpu"), spec)(images).numpy()
    halves = MicroBatcher(backbone, torch.device("cpu"), spec)
    halves.micro_batch = 2
    pieces = halves(images)
    assert len(pieces.chunks) == 3
    for pooling, value in pieces.numpy().items():
        np.testing.assert_allclose(value, whole[pooling], rtol=1e-5, atol=1e-5)
        assert value.dtype == np.float32


def test_host_copies_are_float32_on_the_cpu():
    result = to_host({"cls": torch.ones(2, 3, dtype=torch.bfloat16)}).numpy()
    assert result["cls"].dtype == np.float32 and result["cls"].shape == (2, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_copies_from_the_device_land_in_pinned_memory_and_are_waited_for():
    values = torch.arange(6, device="cuda", dtype=torch.bfloat16).view(2, 3) * 2
    result = to_host({"cls": values})
    assert result.copied is not None and result.chunks[0]["cls"].is_pinned()
    np.testing.assert_array_equal(result.numpy()["cls"], values.float().cpu().numpy())
