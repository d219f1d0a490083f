"""Loading a user's checkpoint: strictly, or not at all, and any refusal in one line.

A checkpoint whose keys or shapes do not all match is refused naming the file, never
half-loaded; the sources with their own mappings (bundled EfficientNet-Lite0, SEEM, VMamba) share
this so each refusal reads the same way. `reading_weights` does the same for the sources whose
library reads the file itself (timm, open_clip, transformers).
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from medprobe.cache.errors import ToolkitError


def load_strictly(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, path: Path, expected: str
) -> None:
    """`model.load_state_dict(state, strict=True)`; a mismatch says `{path} is not {expected}`
    and lists the first missing, unexpected or mis-shaped keys."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        details = " ".join(str(error).split())[:500]
        raise ToolkitError(f"{path} is not {expected}: {details}") from error


@contextmanager
def reading_weights(path: Path | None, expected: str) -> Iterator[None]:
    """While the user's `weights` file is read, any failure (a file that is no checkpoint, an
    empty or truncated one, another architecture's) becomes one error naming the file:
    `weights=PATH: not {expected} (cause)`. With `path` None (hub weights) it does nothing."""
    if path is None:
        yield
        return
    try:
        yield
    except ToolkitError:
        raise
    except Exception as error:  # torch, pickle, zipfile, safetensors and timm raise many types
        cause = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        raise ToolkitError(
            f"weights={path}: not {expected} ({cause})", argument="weights"
        ) from error
