"""Loading a state dict that our own key mapping produced: strictly, or not at all.

A checkpoint whose keys or shapes do not all match is refused naming the file, never
half-loaded; the sources with their own mappings (bundled EfficientNet-Lite0, SEEM, VMamba) share
this so each refusal reads the same way.
"""

from collections.abc import Mapping
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
