"""A probe run as one object: what `mp.probe` returns and what `probe run --out` writes.

`Results.save(folder)` writes exactly the folder of a CLI run; `Results.load(folder)` reads it
back, so `probe report` and a notebook see the same run. The summary, the paired comparisons and
the calibration bins are computed once, where the test resamples and scores are at hand
(`probe.run.runner`), and travel as tables.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.atomic import publish_folder
from medprobe.probe.report.figures import label_efficiency_figure
from medprobe.probe.report.markdown import write_report
from medprobe.probe.stats.paired import headline_of
from medprobe.probe.stats.predictions import PREDICTIONS_FILE, Predictions

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.csv"
PAIRED_FILE = "paired.csv"
CALIBRATION_FILE = "calibration.csv"
SUPPORTS_FILE = "supports.json"
RUN_FILE = "run.json"
SUBGROUPS_FILE = "subgroups.csv"


@dataclass
class Results:
    """frame: the tidy rows of results.csv, one per (dataset, model, pooling, method, budget,
    seed, metric); summary_table: mean and intervals per cell (summary.csv); paired_table: each
    entry minus the best per (dataset, method, budget) on the headline metric (paired.csv);
    calibration: reliability-diagram bins per (dataset, entry, method, budget), summed over
    seeds (calibration.csv); run: settings, datasets' tasks, stores, versions (run.json);
    supports: support ids per 'dataset|budget|seed<k>' (supports.json); predictions: per-image
    test scores, when the run kept them (predictions.h5); subgroups_table: per metadata group,
    the headline metric, ECE, TPR/FPR, gaps and paired gap comparisons (subgroups.csv, see
    `probe.run.breakdown`), empty without `subgroups`."""

    frame: pd.DataFrame
    summary_table: pd.DataFrame
    paired_table: pd.DataFrame
    calibration: pd.DataFrame
    run: dict[str, Any]
    supports: dict[str, list[str]]
    predictions: Predictions | None = field(default=None, repr=False)
    subgroups_table: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def datasets(self) -> list[str]:
        return list(self.run["datasets"])

    def summary(self) -> pd.DataFrame:
        """Mean and 95 % intervals per (dataset, model, pooling, method, budget, metric)."""
        return self.summary_table

    def paired(self) -> pd.DataFrame:
        """Per (dataset, method, budget): each entry minus the best on the headline metric."""
        return self.paired_table

    def subgroups(self) -> pd.DataFrame:
        """Per (dataset, entry, method, budget, attribute, group): metric, n, value, 95 % interval
        (subgroups.csv; empty without `subgroups=`)."""
        return self.subgroups_table

    def plot(self, dataset: str, metric: str | None = None) -> "Figure":
        """The label-efficiency figure of `dataset`: `metric` (default: the headline) against
        the label budget, a panel per method, a line and 95 % band per entry."""
        if dataset not in self.run["datasets"]:
            raise ToolkitError(
                f"dataset={dataset!r}: not in these results; they hold {self.datasets}",
                argument="dataset",
            )
        part = self.summary_table[self.summary_table["dataset"] == dataset]
        metric = metric or headline_of(self.run["datasets"][dataset], part)
        if metric not in set(part["metric"]):
            raise ToolkitError(
                f"metric={metric!r}: not among {sorted(set(part['metric']))}", argument="metric"
            )
        return label_efficiency_figure(part, dataset, metric)

    def save(self, out_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write results.csv, summary.csv, paired.csv, calibration.csv, supports.json, run.json,
        report.md, the plots and (when kept) predictions.h5 into a new folder, published whole
        or not at all."""

        def write_into(folder: Path) -> None:
            self.frame.to_csv(folder / RESULTS_FILE, index=False)
            self.summary_table.to_csv(folder / SUMMARY_FILE, index=False)
            self.paired_table.to_csv(folder / PAIRED_FILE, index=False)
            self.calibration.to_csv(folder / CALIBRATION_FILE, index=False)
            if not self.subgroups_table.empty:
                self.subgroups_table.to_csv(folder / SUBGROUPS_FILE, index=False)
            (folder / SUPPORTS_FILE).write_text(json.dumps(self.supports, indent=0))
            (folder / RUN_FILE).write_text(json.dumps(self.run, indent=1))
            if self.predictions is not None:
                self.predictions.save(folder / PREDICTIONS_FILE)
            write_report(self, folder, title=Path(out_dir).name)

        return publish_folder(Path(out_dir), write_into, overwrite=overwrite)

    @classmethod
    def load(cls, out_dir: str | Path) -> "Results":
        """A results folder as `save` wrote it."""
        out_dir = Path(out_dir)
        needed = (RESULTS_FILE, RUN_FILE, SUMMARY_FILE)
        if not all((out_dir / name).is_file() for name in needed):
            raise ToolkitError(
                f"{out_dir} is not a probe results folder (needs {', '.join(needed)}, as "
                "`probe run --out` and Results.save write)"
            )
        supports_path = out_dir / SUPPORTS_FILE
        predictions_path = out_dir / PREDICTIONS_FILE
        return cls(
            frame=pd.read_csv(out_dir / RESULTS_FILE),
            summary_table=pd.read_csv(out_dir / SUMMARY_FILE),
            paired_table=_read_optional_csv(out_dir / PAIRED_FILE),
            calibration=_read_optional_csv(out_dir / CALIBRATION_FILE),
            run=json.loads((out_dir / RUN_FILE).read_text()),
            supports=json.loads(supports_path.read_text()) if supports_path.is_file() else {},
            predictions=Predictions.load(predictions_path) if predictions_path.is_file() else None,
            subgroups_table=_read_subgroups(out_dir / SUBGROUPS_FILE),
        )


def _read_optional_csv(path: Path) -> pd.DataFrame:
    """A table with no rows (one model: nothing to pair) is written with no columns at all."""
    if not path.is_file() or path.stat().st_size <= 1:
        return pd.DataFrame()
    return pd.read_csv(path)


def _read_subgroups(path: Path) -> pd.DataFrame:
    """subgroups.csv as written: a group or note read as text ('' for none, and a group named
    'NA' stays 'NA'), numbers as numbers (empty: NaN)."""
    if not path.is_file():
        return pd.DataFrame()
    text = ["dataset", "model", "pooling", "method", "budget", "attribute", "group", "note"]
    return pd.read_csv(
        path,
        dtype=dict.fromkeys(text, str),
        keep_default_na=False,
        na_values={column: [""] for column in ("n", "value", "low", "high")},
    )
