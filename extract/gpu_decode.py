"""JPEG decoding on the extraction device (nvJPEG through torchvision on CUDA).

For large JPEGs the CPU decoder, not the GPU, sets the pace of a pass. With `--decode gpu` the
loader workers only read each JPEG's bytes; the main process decodes a whole batch on the device
and cuts every geometry there with antialiased resizing, so the pixels never return to the host.
Anything that is not a plain JPEG file (PNG, DICOM, an adapter's own reading) is decoded by the
workers exactly as in the CPU path and joins the batch as ready views.

The two paths agree within resize tolerance, not bit for bit (different IDCT and resampling
kernels, and the CPU path may decode at a DCT-reduced scale); like the device itself, the decoder
is therefore not part of a store's key.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medprobe.cache import ToolkitError
from medprobe.extract.loader import DecodedBatch, DecodedImages
from medprobe.extract.models.spec import Preprocessing
from medprobe.extract.transforms import resize_geometry

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_SUFFIXES = (".jpg", ".jpeg")
# torch's antialiased kernels follow PIL's for these; nearest-exact is PIL's pixel-centre rule.
DEVICE_INTERPOLATIONS = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest-exact"}

Payload = torch.Tensor | list[torch.Tensor]  # JPEG bytes (1-D uint8), or views decoded on a CPU


@dataclass
class EncodedBatch:
    """One batch of consecutive positions before decoding.

    start: position of the first item; ok: (B,) bool, False where the file could not be read;
    payloads: one per ok item; failures: position -> "path: reason"."""

    start: int
    ok: np.ndarray
    payloads: list[Payload]
    failures: dict[int, str]


def check_device_decoding(geometries: Sequence[Preprocessing], device: torch.device) -> None:
    """Refuse `--decode gpu` where it cannot run, naming the reason and the fix."""
    if device.type != "cuda":
        raise ToolkitError(
            f"--decode gpu needs a CUDA device, and this run uses {device}; use --decode cpu"
        )
    for geometry in geometries:
        if geometry.interpolation not in DEVICE_INTERPOLATIONS:
            raise ToolkitError(
                f"--decode gpu: interpolation {geometry.interpolation!r} has no device kernel "
                f"(have {sorted(DEVICE_INTERPOLATIONS)}); use --decode cpu"
            )


class EncodedImages(DecodedImages):
    """Item i is position i of `row_indices`: a plain JPEG file's bytes, or anything else decoded
    and cut on the worker as `DecodedImages` does."""

    def __getitem__(self, position: int) -> tuple[int, Payload | None, str | None]:
        row = int(self.row_indices[position])
        path = self.dataset.image_path(row) if self.dataset.reads_plain_files else None
        if path is not None and path.suffix.lower() in JPEG_SUFFIXES:
            try:
                data = path.read_bytes()
            except OSError as error:
                return position, None, f"{path}: cannot read ({error.strerror})"
            if data.startswith(JPEG_MAGIC):
                return position, torch.frombuffer(bytearray(data), dtype=torch.uint8), None
        return super().__getitem__(position)


def collate_encoded(items: list[tuple[int, Payload | None, str | None]]) -> EncodedBatch:
    return EncodedBatch(
        start=items[0][0],
        ok=np.array([payload is not None for _, payload, _ in items], dtype=bool),
        payloads=[payload for _, payload, _ in items if payload is not None],
        failures={p: error for p, _, error in items if error is not None},
    )


class DeviceJpegDecoder:
    """Turns an `EncodedBatch` of `images` into a `DecodedBatch` whose views live on `device`.

    On CUDA it decodes on a stream of its own. nvJPEG's hardware engine writes its outputs
    without waiting for work already queued on the stream it is given (pytorch/vision#9606), and
    PyTorch's caching allocator hands a block back out as soon as it is freed on its stream: on
    the forward pass's stream, the decoder could be given memory that queued kernels are still
    reading and overwrite it (seen as NaN embeddings on an H100). The allocator only reuses a
    block on the stream that freed it, so the decoder's stream gets nothing but its own memory,
    and draining that stream before each decode (it holds only the last batch's resizes, not the
    forward pass) leaves none of it in use. The views handed on are recorded on the consumer's
    stream, so they are not reused before the forward pass has read them.
    """

    def __init__(self, images: EncodedImages, device: torch.device) -> None:
        self.images = images
        self.views = images.views
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def __call__(self, batch: EncodedBatch) -> DecodedBatch:
        if self.stream is None:
            return self._decode_batch(batch)
        consumer = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            self.stream.synchronize()
            decoded = self._decode_batch(batch)
        consumer.wait_stream(self.stream)
        for view in decoded.views:
            view.record_stream(consumer)
        return decoded

    def _decode_batch(self, batch: EncodedBatch) -> DecodedBatch:
        from torchvision.io import ImageReadMode

        ok = batch.ok.copy()
        failures = dict(batch.failures)
        ok_positions = batch.start + np.flatnonzero(batch.ok)
        jpeg_slots = [i for i, p in enumerate(batch.payloads) if isinstance(p, torch.Tensor)]
        per_item: list[list[torch.Tensor] | None] = [
            None if isinstance(p, torch.Tensor) else [v.to(self.device) for v in p]
            for p in batch.payloads
        ]
        modes = {1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}
        decoded_by_channels = {
            channels: self._decode([batch.payloads[i] for i in jpeg_slots], mode)
            for channels, mode in modes.items()
            if any(v.channels == channels for v in self.views)
        }
        for slot_index, slot in enumerate(jpeg_slots):
            position = int(ok_positions[slot])
            images = {c: decoded[slot_index] for c, decoded in decoded_by_channels.items()}
            if all(image is not None for image in images.values()):
                per_item[slot] = [cut_view(images[v.channels], v) for v in self.views]
                continue
            # The CPU path for a JPEG the device decoder refused, with its failure record.
            views, error = self.images.decode(position)
            if views is None:
                ok[position - batch.start] = False
                failures[position] = error
            else:
                per_item[slot] = [v.to(self.device) for v in views]
        decoded = [views for views in per_item if views is not None]
        n_views = len(self.views) if decoded else 0  # a batch may fail entirely, as in `collate`
        views = [torch.stack([d[v] for d in decoded]) for v in range(n_views)]
        return DecodedBatch(start=batch.start, ok=ok, views=views, failures=failures)

    def _decode(self, payloads: list[torch.Tensor], mode) -> list[torch.Tensor | None]:
        """One batched nvJPEG call; if it refuses the batch, image by image so that one bad or
        unsupported file (CMYK, arithmetic coding) costs only itself."""
        from torchvision.io import decode_jpeg

        if not payloads:
            return []
        try:
            return list(decode_jpeg(payloads, mode=mode, device=self.device))
        except RuntimeError:
            results: list[torch.Tensor | None] = []
            for payload in payloads:
                try:
                    results.append(decode_jpeg(payload, mode=mode, device=self.device))
                except RuntimeError:
                    results.append(None)
            return results


def cut_view(image: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """(C, H, W) uint8 on the device -> (C, input_size, input_size) uint8, the geometry of
    `to_model_input` (see `resize_geometry`) with torch's antialiased resampling."""
    side = preprocessing.input_size
    (width, height), (left, top) = resize_geometry(image.shape[2], image.shape[1], preprocessing)
    mode = DEVICE_INTERPOLATIONS[preprocessing.interpolation]
    resized = F.interpolate(
        image[None].float(),
        size=(height, width),
        mode=mode,
        antialias=mode != "nearest-exact",
        **({} if mode == "nearest-exact" else {"align_corners": False}),
    )[0]
    cropped = resized[:, top : top + side, left : left + side]
    return cropped.round_().clamp_(0, 255).to(torch.uint8)
