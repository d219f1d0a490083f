"""`mp.extract(...)`: embed one dataset with one or more models, as `extract run` does.

This module imports nothing heavy at import time: `import medprobe` must stay light for the
probe side, which never needs torch. The pipeline is imported when extraction is asked for.
"""

import dataclasses
import difflib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.root import resolve_cache_root

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from medprobe.extract.options import ExtractionOptions
    from medprobe.extract.pipeline import ExtractionReport


def model_names(models: str | Sequence[str]) -> list[str]:
    """Names from a list or a comma-separated string; at least one (each is checked against
    the registry later)."""
    names = models.split(",") if isinstance(models, str) else list(models)
    names = [name.strip() for name in names if name.strip()]
    if not names:
        raise ToolkitError(
            f"models={models!r}: names no model; pass one or more names (see `extract models`)",
            argument="models",
        )
    return names


def extraction_options(device: str = "auto", **options: Any) -> "ExtractionOptions":
    """`ExtractionOptions` from keyword options; an unknown name is refused with the closest."""
    from medprobe.extract.options import ExtractionOptions

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
    return ExtractionOptions(device=device, **options)


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
    them complete. Returns what was written, found complete, joined and left out
    (`report.stores` lists them all).

    models: registry names (`extract models`) or full names (`timm:…`, `hf:…`,
    `open_clip:…`), one or several (a list, or one comma-separated string). data_dir: the
    dataset root (default `data/<dataset>`). dataset_options: the adapter's options (e.g.
    {"uncertain": "ones"}). options: how to run, as `ExtractionOptions` names them
    (batch_size, num_workers, on_error, limit, dtype, weights, pretrained, compile,
    cache_pixels, shard, decode, progress, tokens).

    Everything that can be refused (names, options, device, cache folder, models) is checked
    before the dataset is indexed, which can take minutes for a large one.
    """
    from medprobe.extract.datasets import build_dataset
    from medprobe.extract.models import resolve_model
    from medprobe.extract.options import check_models, resolve_device
    from medprobe.extract.pipeline import extract_dataset

    names = model_names(models)
    run_options = extraction_options(device, **options)
    resolve_device(run_options.device)
    root = resolve_cache_root(cache_dir)
    specs = [resolve_model(name) for name in names]
    check_models(specs, run_options)
    logger.info("indexing dataset %s at %s", dataset, data_dir or f"data/{dataset}")
    loaded = build_dataset(
        dataset, Path(data_dir) if data_dir is not None else None, **(dataset_options or {})
    )
    return extract_dataset(loaded, specs, cache_root=root, options=run_options)
