"""What a dataset adapter is: an indexed table of rows plus a way to read any row's image.

An adapter reads an official download layout and yields, per image: an id (its path relative to
the dataset root), a label, a split and optionally a group (patient or lesion). The whole table is
built before extraction starts, so a store's rows and key are known up front.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from medprobe.cache.errors import ToolkitError
from medprobe.cache.rows import RowTable

TASK_KINDS = ("multiclass", "binary", "ordinal", "multilabel")
HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "quadratic_kappa", "mean_auroc")
SPLIT_BY = ("image", "patient")
DEFAULT_SEED = 42


def single_file(data_dir: Path, suffix: str, dataset: str) -> Path:
    """`data_dir` itself when it is a file, else the only `*<suffix>` file inside it."""
    if data_dir.is_file():
        return data_dir
    candidates = sorted(data_dir.glob(f"*{suffix}")) if data_dir.is_dir() else []
    if len(candidates) != 1:
        raise ToolkitError(
            f"{dataset}: pass the {suffix} file itself as --data-dir (found {len(candidates)} "
            f"{suffix} files in {data_dir})"
        )
    return candidates[0]


@dataclass(frozen=True)
class TaskInfo:
    """Label semantics a probe needs to score a store the way the published studies did."""

    kind: str
    label_names: tuple[str, ...]
    headline_metric: str = "accuracy"
    competition_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task kind {self.kind!r} not in {TASK_KINDS}")
        if self.headline_metric not in HEADLINE_METRICS:
            raise ValueError(f"headline metric {self.headline_metric!r} not in {HEADLINE_METRICS}")

    def as_dict(self) -> dict[str, Any]:
        task: dict[str, Any] = {
            "kind": self.kind,
            "label_names": list(self.label_names),
            "headline_metric": self.headline_metric,
        }
        if self.competition_labels:
            task["competition_labels"] = list(self.competition_labels)
        return task


@dataclass
class ImageDataset(ABC):
    """A dataset ready for extraction.

    Subclasses fill `rows` and `task` in `__post_init__` and implement `read_image`. `options` holds
    every choice that changes the images or labels (they enter the store key); `info` holds facts
    worth recording that do not (the split protocol, where the data came from).

    `seed` and `split_by` are the generic options every adapter takes: the seed of any split the
    adapter draws, and whether it draws by image or by patient/lesion group (None: the adapter's
    published default). Adapters with an official split use them only where they carve one.
    """

    name: str
    root: Path
    rows: RowTable = field(init=False)
    task: TaskInfo = field(init=False)
    options: dict[str, Any] = field(default_factory=dict, init=False)
    info: dict[str, Any] = field(default_factory=dict, init=False)
    seed: int = DEFAULT_SEED
    split_by: str | None = None
    # True where read_image is open_image(image_path(row)) and nothing more, so a JPEG file may
    # be handed to a GPU decoder as stored (`--decode gpu`); adapters that transform pixels or
    # read arrays keep False.
    reads_plain_files: ClassVar[bool] = False

    def resolve_split_by(self, default: str, groups: Sequence[str] | None) -> str:
        """`split_by`, or `default` when unset; 'patient' needs groups. Recorded in `info` (the
        split itself is in the rows' fingerprint, so the store key already follows it)."""
        split_by = self.split_by or default
        if split_by not in SPLIT_BY:
            raise ToolkitError(f"{self.name}: split_by={split_by!r} is not one of {list(SPLIT_BY)}")
        if split_by == "patient" and groups is None:
            raise ToolkitError(
                f"{self.name}: split_by=patient needs patient or lesion ids, and this layout has "
                "none; use split_by=image"
            )
        self.info.update(split_by=split_by, split_seed=self.seed)
        return split_by

    @abstractmethod
    def read_image(self, row: int, *, min_side: int | None = None) -> Image.Image:
        """Decode row `row`'s image. `min_side` lets JPEG readers decode at a reduced scale whose
        shorter side is still at least `min_side` pixels. Raises on an unreadable image; the
        message names the file."""

    def image_path(self, row: int) -> Path | None:
        """Where row `row`'s image lives on disk (None for in-memory datasets)."""
        return self.root / self.rows.ids[row]

    def __len__(self) -> int:
        return len(self.rows)
