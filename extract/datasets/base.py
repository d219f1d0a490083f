"""What a dataset adapter is: an indexed table of rows plus a way to read any row's image.

An adapter reads an official download layout and yields, per image: an id (its path relative to
the dataset root), a label, a split and optionally a group (patient or lesion). The whole table is
built before extraction starts, so a store's rows and key are known up front.
"""

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from medprobe.cache.errors import ToolkitError
from medprobe.cache.layout.schema import HEADLINE_METRICS, TASK_KINDS
from medprobe.cache.rows import RowTable
from medprobe.extract.datasets.images import open_image

SPLIT_BY = ("image", "patient")
DEFAULT_SEED = 42


def _subfolders(folder: Path) -> list[Path]:
    """Visible sub-folders of `folder`, sorted (os.scandir: no stat per entry)."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir() and not e.name.startswith("."))


def layout_error(
    dataset: str, root: Path, expected: str, holds_layout: Callable[[Path], bool]
) -> ToolkitError:
    """The error for a data folder that does not hold `expected`: it names the folder one level
    down (or the parent) that does, the usual slip being a path one level too high."""
    nearby = [d for d in _subfolders(root) if holds_layout(d)]
    if not nearby and root.parent != root and holds_layout(root.parent):
        nearby = [root.parent]
    if len(nearby) == 1:
        hint = f"; did you mean --data-dir {nearby[0]}?"
    elif nearby:
        hint = f"; these folders hold it: {', '.join(str(d) for d in nearby[:5])}"
    else:
        hint = ""
    return ToolkitError(f"{dataset}: {root} does not hold {expected}{hint}")


def single_file(data_dir: Path, suffix: str, dataset: str) -> Path:
    """`data_dir` itself when it is a file, else the only `*<suffix>` file inside it."""
    if data_dir.is_file():
        return data_dir
    candidates = sorted(data_dir.glob(f"*{suffix}")) if data_dir.is_dir() else []
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise layout_error(
            dataset,
            data_dir,
            f"a {suffix} file (pass the file itself as --data-dir, or its folder)",
            lambda folder: len(list(folder.glob(f"*{suffix}"))) == 1,
        )
    raise ToolkitError(
        f"{dataset}: {data_dir} holds {len(candidates)} {suffix} files "
        f"({', '.join(c.name for c in candidates[:5])}); pass the one to use as --data-dir"
    )


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

    @abstractmethod
    def image_path(self, row: int) -> Path | None:
        """Where row `row`'s image lives on disk (None for in-memory datasets)."""

    @abstractmethod
    def sources_fingerprint(self, rows: Sequence[int]) -> str:
        """sha256 of what the images of `rows` are read from, cheap enough for every run (file
        sizes and modification times, or an archive's): images replaced under the same ids
        change it, and with it the store key."""

    def __len__(self) -> int:
        return len(self.rows)


def _stat_fact(path: str) -> bytes:
    """`size mtime_ns` of a file, or why there is none (such a row fails, or is skipped, when
    it is decoded; here it only has to hash differently from a readable file)."""
    try:
        stat = os.stat(path)
    except OSError as error:
        return f"unreadable {error.errno}\n".encode()
    return f"{stat.st_size} {stat.st_mtime_ns}\n".encode()


def files_fingerprint(paths: Sequence[Path]) -> str:
    """sha256 over each file's size and modification time, in order: one stat per file, no
    read (reading every image would cost a full decoding pass)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(_stat_fact(os.fspath(path)))
    return digest.hexdigest()


@dataclass
class ImageFilesDataset(ImageDataset):
    """An adapter whose images are files under `root` (id = path relative to root, or absolute),
    decoded by `open_image`: one reader for every such adapter."""

    reads_plain_files: ClassVar[bool] = True

    def dicom_window(self) -> str:
        """How DICOM files are windowed (see `images.DICOM_WINDOWS`); adapters may override."""
        return "stored"

    def image_path(self, row: int) -> Path:
        return self.root / self.rows.ids[row]

    def read_image(self, row: int, *, min_side: int | None = None) -> Image.Image:
        return open_image(self.image_path(row), min_side=min_side, dicom_window=self.dicom_window())

    def sources_fingerprint(self, rows: Sequence[int]) -> str:
        return files_fingerprint([self.image_path(int(row)) for row in rows])
