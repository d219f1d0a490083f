"""Dataset adapters by name. Each reads one official layout into an `ImageDataset`."""

import dataclasses
import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medprobe.cache.errors import ToolkitError
from medprobe.extract.datasets.aptos2019 import Aptos2019Dataset
from medprobe.extract.datasets.base import ImageDataset, TaskInfo
from medprobe.extract.datasets.cbis_ddsm import CbisDdsmDataset
from medprobe.extract.datasets.chexpert import CheXpertDataset
from medprobe.extract.datasets.csv_list import CsvDataset
from medprobe.extract.datasets.digits import DigitsDataset
from medprobe.extract.datasets.folder import FolderDataset
from medprobe.extract.datasets.isic2019 import Isic2019Dataset
from medprobe.extract.datasets.medmnist import MedMnistDataset


@dataclass(frozen=True)
class DatasetEntry:
    """How to build one dataset: its factory, whether it needs files, and one line for `--help`.

    `option_names` are the keyword options the factory accepts (read from its dataclass fields,
    so they cannot drift from the code); `option_defaults` maps each to its default.
    """

    factory: Callable[..., ImageDataset]
    layout: str
    needs_data_dir: bool = True

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(self.option_defaults)

    @property
    def option_defaults(self) -> dict[str, Any]:
        return {
            f.name: f.default
            for f in dataclasses.fields(self.factory)  # type: ignore[arg-type]
            if f.init and f.name not in ("name", "root")
        }


DATASETS: dict[str, DatasetEntry] = {
    "folder": DatasetEntry(FolderDataset, "<class>/<img> or {train,val,test}/<class>/<img>"),
    "csv": DatasetEntry(CsvDataset, "a CSV with path,label[,split][,group]"),
    "isic2019": DatasetEntry(
        Isic2019Dataset, "ISIC_2019_Training_Input/*.jpg + ISIC_2019_Training_GroundTruth.csv"
    ),
    "aptos2019": DatasetEntry(Aptos2019Dataset, "train.csv + train_images/<id_code>.png"),
    "cbis_ddsm": DatasetEntry(
        CbisDdsmDataset,
        "*_case_description_*_set.csv + TCIA DICOM tree, or csv/ (dicom_info.csv) + jpeg/",
    ),
    "chexpert": DatasetEntry(CheXpertDataset, "train.csv, valid.csv, train/ and valid/ trees"),
    "medmnist": DatasetEntry(MedMnistDataset, "<flag>[_<size>].npz (official splits)"),
    "digits": DatasetEntry(
        DigitsDataset, "scikit-learn's bundled 8x8 digits (no files)", needs_data_dir=False
    ),
}


def build_dataset(name: str, data_dir: Path | None, **options: Any) -> ImageDataset:
    """Index dataset `name` at `data_dir` (default `data/<name>`) with adapter `options`."""
    if name not in DATASETS:
        close = difflib.get_close_matches(name, list(DATASETS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ToolkitError(f"unknown dataset {name!r}{hint} Known: {', '.join(sorted(DATASETS))}")
    entry = DATASETS[name]
    unknown = sorted(set(options) - set(entry.option_names))
    if unknown:
        hints = [
            f"{key} (did you mean {close[0]}?)" if close else key
            for key in unknown
            for close in [difflib.get_close_matches(key, entry.option_names, n=1)]
        ]
        raise ToolkitError(
            f"dataset {name}: unknown option(s) {', '.join(hints)}; it takes "
            f"{', '.join(entry.option_names)}"
        )
    root = Path(data_dir) if data_dir is not None else Path("data") / name
    # A folder that a download will create need not exist yet.
    if entry.needs_data_dir and not root.exists() and not options.get("download"):
        raise ToolkitError(f"dataset {name}: {root} does not exist; pass --data-dir")
    dataset = entry.factory(name=name, root=root, **options)
    check_utf8_ids(dataset)
    return dataset


def check_utf8_ids(dataset: ImageDataset) -> None:
    """Refuse file names that are not UTF-8 (Python keeps their bytes as surrogates): a store
    holds ids as UTF-8 text, so such a name could be neither keyed nor written."""
    bad = []
    for image_id in dataset.rows.ids:
        try:
            image_id.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(printable(image_id))
    if bad:
        raise ToolkitError(
            f"dataset {dataset.name}: {len(bad)} file name(s) under "
            f"{printable(os.fspath(dataset.root))} are not UTF-8, e.g. {bad[0]!r}; rename them "
            "to UTF-8 (e.g. `convmv -f latin1 -t utf-8 -r --notest DIR`)"
        )


def printable(name: str) -> str:
    """A file name whose undecodable bytes (surrogates) are shown as `\\xe9` escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


__all__ = ["DATASETS", "DatasetEntry", "ImageDataset", "TaskInfo", "build_dataset"]
