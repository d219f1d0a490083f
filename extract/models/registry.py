"""Model names to specs, and specs to built backbones.

Short names come from `catalog.SEED_MODELS`; any other model is reachable by prefix:
`timm:NAME`, `hf:ORG/NAME` and `open_clip:ARCH/TAG`. Unknown names fail with the closest ones.
"""

import difflib
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from functools import cache
from pathlib import Path

import torch

from medprobe.cache.errors import ToolkitError
from medprobe.extract.models.backbone import Backbone
from medprobe.extract.models.spec import ModelSpec
from medprobe.extract.offline import hub_access

Builder = Callable[..., Backbone]
PREFIXES = ("timm:", "hf:", "open_clip:")
# Every backbone is built from this seed, on a forked generator: random-init weights
# (pretrained=False) are the same on every run, so one store key always holds the same bytes,
# and the caller's global random state is left as it was.
RANDOM_INIT_SEED = 0
# Sources whose pretrained weights come from the Hugging Face hub (and its cache).
HUB_SOURCES = ("timm", "hf", "open_clip", "seem")


class ModelRegistry:
    """Short name -> ModelSpec. Refuses a duplicate name, as kaiko-ai/eva's registries do."""

    def __init__(self, specs: Iterable[ModelSpec] = ()) -> None:
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: ModelSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"model name {spec.name!r} is registered twice")
        self._specs[spec.name] = spec

    def names(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[ModelSpec]:
        return [self._specs[n] for n in self.names()]

    def get(self, name: str) -> ModelSpec:
        if name in self._specs:
            return self._specs[name]
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ToolkitError(
            f"unknown model {name!r}{hint} Known: {', '.join(self.names())}; or name any model "
            f"with a prefix: {', '.join(p + '…' for p in PREFIXES)}"
        )


@cache
def default_registry() -> ModelRegistry:
    from medprobe.extract.models.catalog import SEED_MODELS

    return ModelRegistry(SEED_MODELS)


def resolve_model(name: str) -> ModelSpec:
    """A registry short name, or a prefixed full name resolved from the library's own config."""
    if name.startswith("timm:"):
        from medprobe.extract.models.sources.timm_source import timm_spec

        return timm_spec(name.removeprefix("timm:"))
    if name.startswith("hf:"):
        from medprobe.extract.models.sources.hf_source import hf_spec

        return hf_spec(name.removeprefix("hf:"))
    if name.startswith("open_clip:"):
        from medprobe.extract.models.sources.open_clip_source import open_clip_spec

        return open_clip_spec(name.removeprefix("open_clip:"))
    return default_registry().get(name)


def _builders() -> dict[str, Builder]:
    from medprobe.extract.models.sources import (
        bundled_source,
        hf_source,
        open_clip_source,
        seem_source,
        timm_source,
        vmamba_source,
    )

    return {
        "timm": timm_source.build_timm,
        "hf": hf_source.build_hf,
        "open_clip": open_clip_source.build_open_clip,
        "bundled": bundled_source.build_bundled_lite0,
        "seem": seem_source.build_seem,
        "vmamba": vmamba_source.build_vmamba,
    }


def build_backbone(
    spec: ModelSpec, *, weights: Path | None = None, pretrained: bool = True
) -> Backbone:
    """Build `spec`'s frozen backbone; `weights` is a local checkpoint for offline machines.
    Whatever is initialised at random is drawn from `RANDOM_INIT_SEED`."""
    if weights is not None and not Path(weights).exists():
        raise ToolkitError(f"weights={weights}: no such file", argument="weights")
    builders = _builders()
    if spec.source not in builders:
        raise ToolkitError(f"model {spec.name}: no loader for source {spec.source!r}")
    downloads = pretrained and weights is None and spec.source in HUB_SOURCES
    with hub_access() if downloads else nullcontext() as offline, torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        try:
            return builders[spec.source](
                spec, weights=Path(weights) if weights else None, pretrained=pretrained
            )
        except ToolkitError as error:
            if offline is None:
                raise
            raise ToolkitError(f"{spec.name}: {offline}, and {error}") from error
