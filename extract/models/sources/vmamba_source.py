"""VMamba-S/B (our `vmamba` module) from the official ImageNet-1k release checkpoints.

The checkpoints are GitHub release assets of MzeroMiko/VMamba, not on a model hub: they are
downloaded once into torch.hub's cache (`$TORCH_HOME/hub/checkpoints`, ~/.cache/torch by default)
and read from there afterwards. With `HF_HUB_OFFLINE=1`, the toolkit's offline switch, nothing is
downloaded: the file must be in that cache already or be given with `--weights FILE`.
"""

import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from medprobe.cache.errors import ToolkitError
from medprobe.extract.models.backbone import Backbone
from medprobe.extract.models.sources.strict import load_strictly, reading_weights
from medprobe.extract.models.spec import ModelSpec
from medprobe.extract.models.tokens import TOKENS, grid_from_map
from medprobe.extract.offline import is_offline

logger = logging.getLogger(__name__)

# The ImageNet-1k classification release ("#v2cls"); `checkpoint` is the asset's file name.
RELEASE_URL = "https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/{checkpoint}"
# The keys of the ImageNet head, which a features-only model does not have.
HEAD_KEYS = ("classifier.head.weight", "classifier.head.bias")


def vmamba_checkpoint_path(checkpoint: str) -> Path:
    """The release file from torch.hub's cache, downloaded there first when online."""
    url = RELEASE_URL.format(checkpoint=checkpoint)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / checkpoint
    if cached.is_file():
        return cached
    hint = (
        f"Download {url} on a machine with internet and put it at {cached}, or pass "
        f"--weights /path/to/{checkpoint}"
    )
    if is_offline():
        raise ToolkitError(f"VMamba checkpoint {checkpoint!r} is not at {cached} (offline). {hint}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, cached)
    try:
        # Written to a temporary name and moved into place, so a broken download leaves nothing.
        torch.hub.download_url_to_file(url, str(cached), progress=True)
    except OSError as error:  # URLError and HTTPError are OSErrors
        raise ToolkitError(f"could not download {url}: {error}. {hint}") from error
    return cached


def vmamba_state_dict(checkpoint: object, *, with_head: bool) -> dict[str, torch.Tensor]:
    """The release file's content -> our module's state dict.

    The release stores the model's state dict under `model` (beside training state in some
    files); a bare state dict is taken as it is. Only the ImageNet head is dropped, and only
    when the model is built without one; every other key must match.
    """
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    if not isinstance(state, Mapping):
        raise ToolkitError(f"expected a state dict under 'model', found {type(state).__name__}")
    return {k: v for k, v in state.items() if with_head or k not in HEAD_KEYS}


def load_vmamba_checkpoint(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # A training checkpoint can also pickle its yacs config and optimizer: not loaded
        # blindly; re-saving the tensors alone makes it loadable. (Anything else is no
        # checkpoint at all, and is reported as such by the caller.)
        unsupported = re.search(r"Unsupported global: [^\n]*", str(error))
        if unsupported is None:
            raise
        raise ToolkitError(
            f"{path} holds pickled objects besides tensors ({unsupported[0]}). If you "
            'trust the file, keep its weights only: python -c "import torch; torch.save('
            f"{{'model': torch.load('{path}', weights_only=False)['model']}}, "
            "'vmamba_weights.pth')\" and pass --weights vmamba_weights.pth"
        ) from error


def _pool(encoder, images):
    """The classifier's pooling (what `VSSM.forward` returns without a head) and the last
    stage's feature map it averages, from one pass."""
    features = encoder.forward_features(images)
    return {"pooled": features.mean(dim=(2, 3)), TOKENS: grid_from_map(features)}


def build_vmamba(spec: ModelSpec, *, weights: Path | None, pretrained: bool) -> Backbone:
    """VSSM without its head, loaded strictly from the release checkpoint (or `weights`)."""
    from medprobe.extract.models.vmamba import VSSM

    model = VSSM(**dict(spec.build_kwargs))
    if pretrained or weights is not None:
        path = weights or vmamba_checkpoint_path(spec.checkpoint)
        expected = f"a VMamba checkpoint of {spec.name}'s configuration ({dict(spec.build_kwargs)})"
        with reading_weights(weights, expected):
            state = vmamba_state_dict(load_vmamba_checkpoint(path), with_head=False)
        load_strictly(model, state, path=path, expected=expected)
    return Backbone(model, _pool, spec.poolings)
