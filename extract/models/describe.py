"""What `extract models` shows: the registry as rows, and an offline check of one entry."""

import logging
from typing import Any

import torch

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.disk import human_size
from medprobe.extract.models.backbone import Backbone
from medprobe.extract.models.registry import build_backbone, default_registry, resolve_model
from medprobe.extract.models.spec import ModelSpec

logger = logging.getLogger(__name__)

# The token grid the table states: `extract run --tokens 8`, the and the bench's setting.
DOCUMENTED_TOKEN_SIDE = 8
TOKENS_COLUMN = "tokens at --tokens 8"


def _input(spec: ModelSpec) -> str:
    p = spec.preprocessing
    if p.crop == "center":
        geometry = f"crop from {p.resize_size}"
    else:
        geometry = "squash" if p.resize_size == p.input_size else f"squash to {p.resize_size}, crop"
    return f"{p.input_size} px ({geometry}, {p.interpolation})"


def describe_models(*, with_costs: bool = False, with_notes: bool = False) -> list[dict[str, Any]]:
    """One row per registry entry; `with_costs` adds parameters and GFLOPs per image, counted
    on the meta device (no weights are allocated or downloaded); `with_notes` adds which
    published embedding the entry reproduces."""
    rows = []
    for spec in default_registry().specs():
        row = {
            "name": spec.name,
            "source": spec.source,
            "checkpoint": spec.checkpoint,
            "input": _input(spec),
            "poolings": ",".join(spec.poolings),
            "dim": spec.embed_dim or "?",
        }
        if with_costs:
            try:
                params, gflops = model_costs(spec)
                tokens = meta_token_layout(spec, DOCUMENTED_TOKEN_SIDE)
            except ToolkitError as error:
                # An architecture that lives only on its hub (BiomedCLIP's open_clip config)
                # cannot be counted offline; the table still lists it.
                logger.info("no costs for %s offline: %s", spec.name, error)
                row["params (M)"] = row["GFLOPs"] = row[TOKENS_COLUMN] = "?"
            else:
                row["params (M)"] = f"{params / 1e6:.1f}"
                row["GFLOPs"] = f"{gflops:.1f}"
                row[TOKENS_COLUMN] = describe_tokens(tokens)
        if with_notes:
            row["what is read"] = spec.reproduces
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """`rows` as a Markdown table (docs/models.md is this output, so it cannot drift)."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"`{v}`" if k in ("name", "checkpoint") else str(v) for k, v in row.items()]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def model_costs(spec: ModelSpec) -> tuple[int, float]:
    """(parameters, GFLOPs for one image at the spec's input size), on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        backbone = build_backbone(spec, pretrained=False)
        side = spec.preprocessing.input_size
        with FlopCounterMode(display=False) as counter:
            backbone(torch.zeros(1, 3, side, side))
    return sum(p.numel() for p in backbone.parameters()), counter.get_total_flops() / 1e9


def meta_token_layout(spec: ModelSpec, max_side: int) -> dict[str, Any]:
    """{'grid': [h, w], 'prefix_tokens': p, 'dim': D} that `--tokens max_side` stores for
    `spec`: its architecture built and run on the meta device (nothing allocated or downloaded)."""
    with torch.device("meta"):
        backbone = build_backbone(spec, pretrained=False)
        try:
            return backbone.token_layout(spec.preprocessing.input_size, max_side)
        except ValueError as error:
            raise ToolkitError(f"{spec.name} offers no token grid for --tokens ({error})") from None


def describe_tokens(layout: dict[str, Any]) -> str:
    """'1 + 8x8 of 1024 (130 KiB)': prefix tokens, grid and token size, float16 bytes/image."""
    height, width = layout["grid"]
    prefix = f"{layout['prefix_tokens']} + " if layout["prefix_tokens"] else ""
    n_tokens = layout["prefix_tokens"] + height * width
    return (
        f"{prefix}{height}x{width} of {layout['dim']} ({human_size(n_tokens * layout['dim'] * 2)})"
    )


def check_model(name: str) -> dict[str, Any]:
    """Build `name`'s architecture offline (random weights) and run one forward pass at its
    input size: the embedding size of every pooling, against the size the registry states."""
    spec = resolve_model(name)
    backbone: Backbone = build_backbone(spec, pretrained=False)
    dims = backbone.embed_dims(spec.preprocessing.input_size)
    stated = spec.embed_dim
    matches = all(d == spec.pooling_dim(p) for p, d in dims.items())
    verdict = "ok" if stated is None or matches else "MISMATCH"
    return {
        "name": spec.name,
        "checkpoint": spec.checkpoint,
        "reads": spec.reproduces,
        "input": _input(spec),
        "embedding dims": dims,
        "registry says": stated or "-",
        "check": verdict,
        "parameters": f"{sum(p.numel() for p in backbone.parameters()) / 1e6:.1f} M",
    }
