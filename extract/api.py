"""`mp.extract(...)`: embed one dataset with one or more models, as `extract run` does.

This module imports nothing heavy at import time: `import medprobe` must stay light for the
probe side, which never needs torch. The pipeline is imported when extraction is asked for.
"""

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medprobe.cache.errors import ToolkitError
from medprobe.cache.root import resolve_cache_root

if TYPE_CHECKING:
    from medprobe.extract.pipeline import ExtractionReport


def extract(
    dataset: str,
    models: str | Sequence[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    dataset_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> "ExtractionReport":
    """Write one store per model for `dataset` (one pass: each image decoded once), or find
    them complete. Returns what was written, found complete, joined and left out.

    models: registry names (`extract models`) or full names (`timm:…`, `hf:…`,
    `open_clip:…`), one or several. data_dir: the dataset root (default `data/<dataset>`).
    dataset_options: the adapter's options (e.g. {"uncertain": "ones"}). options: how to run,
    as `ExtractionOptions` names them (batch_size, num_workers, on_error, limit, dtype,
    weights, pretrained, compile, cache_pixels, shard, decode, progress).
    """
    from medprobe.extract.datasets import build_dataset
    from medprobe.extract.models import resolve_model
    from medprobe.extract.pipeline import ExtractionOptions, extract_dataset

    names = [models] if isinstance(models, str) else list(models)
    known = [f.name for f in dataclasses.fields(ExtractionOptions) if f.name != "device"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        hints = [
            f"{key} (did you mean {close[0]}?)" if close else key
            for key in unknown
            for close in [difflib.get_close_matches(key, known, n=1)]
        ]
        raise ToolkitError(
            f"unknown option(s) {', '.join(hints)}; extraction takes {', '.join(known)}"
        )
    run_options = ExtractionOptions(device=device, **options)
    specs = [resolve_model(name.strip()) for name in names if name.strip()]
    loaded = build_dataset(
        dataset, Path(data_dir) if data_dir is not None else None, **(dataset_options or {})
    )
    return extract_dataset(
        loaded, specs, cache_root=resolve_cache_root(cache_dir), options=run_options
    )
