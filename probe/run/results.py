"""A probe run as one object: what `mp.probe` returns and what `probe run --out` writes.

`Results.save(folder)` writes exactly the folder of a CLI run; `Results.load(folder)` reads it
back, so `probe report` and a notebook see the same run. The summary, the paired comparisons and
the calibration bins are computed once, where the test resamples and scores are at hand
(`probe.run.runner`), and travel as tables.
"""

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.atomic import publish_folder
from medprobe.probe.report.figures import label_efficiency_figure
from medprobe.probe.report.html import write_html_report
from medprobe.probe.report.markdown import n_classes_of, write_report
from medprobe.probe.report.tables import shown_cells
from medprobe.probe.stats.paired import PAIRED_COLUMNS, headline_of
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
        return label_efficiency_figure(
            part, dataset, metric, n_classes=n_classes_of(self.run["datasets"][dataset])
        )

    def save(
        self, out_dir: str | Path, *, overwrite: bool = False, protected: Sequence[Path] = ()
    ) -> Path:
        """Write results.csv, summary.csv (with `shown`: each cell as the reports print it),
        paired.csv (a header even with nothing to pair), calibration.csv, supports.json,
        run.json, report.md, report.html, the plots and (when kept) predictions.h5 into a new
        folder, published whole or not at all. The folder may never be or hold the stores read,
        nor `protected` (the cache root); overwrite=True replaces only a results folder (see
        `publish_folder`)."""
        out_dir = Path(os.path.abspath(out_dir))
        protected = [*protected, *(Path(s["path"]) for s in self.run.get("stores", []))]

        def write_into(folder: Path) -> None:
            self.frame.to_csv(folder / RESULTS_FILE, index=False)
            summary = self.summary_table.assign(shown=shown_cells(self.summary_table))
            summary.to_csv(folder / SUMMARY_FILE, index=False)
            paired = self.paired_table
            if paired.columns.empty:  # one model: no row, but pandas must read the columns
                paired = pd.DataFrame(columns=["dataset", "metric", *PAIRED_COLUMNS])
            paired.to_csv(folder / PAIRED_FILE, index=False)
            self.calibration.to_csv(folder / CALIBRATION_FILE, index=False)
            if not self.subgroups_table.empty:
                self.subgroups_table.to_csv(folder / SUBGROUPS_FILE, index=False)
            (folder / SUPPORTS_FILE).write_text(json.dumps(self.supports, indent=0))
            (folder / RUN_FILE).write_text(json.dumps(self.run, indent=1))
            if self.predictions is not None:
                self.predictions.save(folder / PREDICTIONS_FILE)
            write_report(self, folder, title=out_dir.name)
            write_html_report(self, folder, title=out_dir.name)

        return publish_folder(
            out_dir, write_into, overwrite=overwrite, protected=protected, marker=RUN_FILE
        )

    @classmethod
    def load(cls, out_dir: str | Path) -> "Results":
        """A results folder as `save` wrote it; a file that is missing, cut short or damaged is
        refused by name (a report rebuilt from part of a run would look whole)."""
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
            frame=_read_table(out_dir / RESULTS_FILE),
            # `shown` is the report's text of each row, derived on save
            summary_table=_read_table(out_dir / SUMMARY_FILE).drop(
                columns="shown", errors="ignore"
            ),
            paired_table=_read_table(out_dir / PAIRED_FILE, optional=True),
            calibration=_read_table(out_dir / CALIBRATION_FILE, optional=True),
            run=_read_json(out_dir / RUN_FILE),
            supports=_read_json(supports_path) if supports_path.is_file() else {},
            predictions=_read_predictions(predictions_path),
            subgroups_table=_read_subgroups(out_dir / SUBGROUPS_FILE),
        )


# Columns every results.csv and summary.csv row has; a file without them is not one of ours.
KEY_COLUMNS = ("dataset", "model", "pooling", "method", "budget", "metric")


def _damaged(path: Path, what: str) -> ToolkitError:
    return ToolkitError(
        f"{path} {what}; the results folder is damaged: rerun `probe run` to write it again"
    )


def _read_table(path: Path, *, optional: bool = False) -> pd.DataFrame:
    """A CSV the run wrote. A table with no rows (one model: nothing to pair) is written with no
    columns at all and is fine where `optional`; results.csv and summary.csv must hold rows
    with their key columns, and any table must end where a row ends (one cut short does not)."""
    if optional and (not path.is_file() or path.stat().st_size <= 1):
        return pd.DataFrame()
    try:
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            raise _damaged(path, "ends in the middle of a row (cut short)")
        table = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        if isinstance(error, pd.errors.EmptyDataError) and optional:
            return pd.DataFrame()
        raise _damaged(path, f"cannot be read ({str(error).splitlines()[0]})") from None
    if not optional:
        missing = [column for column in KEY_COLUMNS if column not in table.columns]
        if missing:
            raise _damaged(path, f"lacks the columns {missing}")
        if table.empty:
            raise _damaged(path, "holds a header and no rows")
    return table


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _damaged(path, f"cannot be read ({str(error).splitlines()[0]})") from None
    if not isinstance(value, dict) or (path.name == RUN_FILE and "datasets" not in value):
        raise _damaged(path, "does not hold what the run wrote (no 'datasets' record)")
    return value


def _read_predictions(path: Path) -> Predictions | None:
    if not path.is_file():
        return None
    try:
        return Predictions.load(path)
    except (OSError, KeyError, ValueError) as error:
        raise _damaged(path, f"cannot be read ({str(error).splitlines()[0]})") from None


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
