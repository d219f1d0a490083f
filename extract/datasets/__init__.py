"""Dataset adapters by name. Each reads one official layout into an `ImageDataset`."""

import dataclasses
import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.paths import slug
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
    # A user's own data (a folder, a CSV list) takes `name=`: two such datasets named alike
    # would share one folder of the cache and be compared as one dataset.
    nameable: bool = False

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(self.option_defaults)

    @property
    def option_defaults(self) -> dict[str, Any]:
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(self.factory)  # type: ignore[arg-type]
            if f.init and f.name not in ("name", "root")
        }
        return {"name": None, **defaults} if self.nameable else defaults


DATASETS: dict[str, DatasetEntry] = {
    "folder": DatasetEntry(
        FolderDataset, "<class>/<img> or {train,val,test}/<class>/<img>", nameable=True
    ),
    "csv": DatasetEntry(CsvDataset, "a CSV with path,label[,split][,group]", nameable=True),
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


def build_dataset(name: str, data_dir: Path | None, /, **options: Any) -> ImageDataset:
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
    check_option_values(name, entry, options)
    root = Path(data_dir) if data_dir is not None else Path("data") / name
    # A folder that a download will create need not exist yet.
    if entry.needs_data_dir and not root.exists() and not options.get("download"):
        if data_dir is not None:
            raise ToolkitError(
                f"dataset {name}: data_dir={str(root)!r} does not exist; check the path",
                argument="data_dir",
            )
        raise ToolkitError(
            f"dataset {name}: no data_dir given and the default folder {root} does not exist; "
            "pass data_dir=DIR, the dataset's root",
            argument="data_dir",
        )
    store_name = dataset_name(name, options.pop("name", None)) if entry.nameable else name
    dataset = entry.factory(name=store_name, root=root, **options)
    check_utf8_ids(dataset)
    return dataset


def check_option_values(name: str, entry: DatasetEntry, options: dict[str, Any]) -> None:
    """Refuse an option whose value is not of its default's kind (`seed=abc`, `roi=2`) or a
    negative seed, before numpy or the adapter fails on it with a traceback."""
    for key, value in options.items():
        default = entry.option_defaults[key]
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ToolkitError(
                f"dataset {name}: {key}={value!r} is not true or false; pass {key}=true or "
                f"{key}=false",
                argument=key,
            )
        is_whole = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(default, int) and not isinstance(default, bool) and not is_whole:
            raise ToolkitError(
                f"dataset {name}: {key}={value!r} is not a whole number; pass e.g. {key}={default}",
                argument=key,
            )
        if key == "seed" and value < 0:
            raise ToolkitError(
                f"dataset {name}: seed={value} is negative; a split seed is a whole number "
                f">= 0 (default {default})",
                argument=key,
            )


def dataset_name(adapter: str, name: Any) -> str:
    """The name a user gives a folder or CSV dataset (`name=skin-a`), else the adapter's: it
    names the cache folder and the dataset in every result. Another adapter's name is refused
    (its stores would be compared with that dataset's), and so is any name that is not a plain
    file name."""
    if name is None:
        return adapter
    text = str(name)
    if not text or slug(text) != text or text.startswith("."):
        raise ToolkitError(
            f"dataset {adapter}: name={text!r} is not a plain name; use letters, digits, '-', "
            "'_' and '.' (e.g. name=skin-a)",
            argument="name",
        )
    if text in DATASETS and text != adapter:
        raise ToolkitError(
            f"dataset {adapter}: name={text!r} is the {text} adapter's name; its stores would "
            "be taken for that dataset's, so choose another (e.g. name=my-" + text + ")",
            argument="name",
        )
    return text


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
