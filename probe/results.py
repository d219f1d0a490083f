"""A probe run as one object: what `mp.probe` returns and what `probe run --out` writes.

`Results.save(folder)` writes exactly the folder of a CLI run; `Results.load(folder)` reads it
back, so `probe report` and a notebook see the same run.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medprobe.cache.atomic import publish_folder
from medprobe.cache.errors import ToolkitError
from medprobe.probe.predictions import PREDICTIONS_FILE, Predictions
from medprobe.probe.stats import paired_differences, summarise

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.csv"
PAIRED_FILE = "paired.csv"
SUPPORTS_FILE = "supports.json"
RUN_FILE = "run.json"


@dataclass
class Results:
    """frame: the tidy rows of results.csv, one per (dataset, model, pooling, method, budget,
    seed, metric); run: the settings, datasets' tasks, stores and versions behind them (run.json);
    supports: the support ids per 'dataset|budget|seed<k>' (supports.json); predictions: the
    per-image test scores, when the run kept them."""

    frame: pd.DataFrame
    run: dict[str, Any]
    supports: dict[str, list[str]]
    predictions: Predictions | None = None
    _summary: pd.DataFrame | None = field(default=None, repr=False)
    _paired: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def datasets(self) -> list[str]:
        return list(self.run["datasets"])

    def summary(self) -> pd.DataFrame:
        """Mean and 95 % interval per (dataset, model, pooling, method, budget, metric)."""
        if self._summary is None:
            self._summary = summarise(self.frame)
        return self._summary

    def paired(self) -> pd.DataFrame:
        """Per (dataset, method, budget): each entry minus the best on the headline metric."""
        if self._paired is None:
            from medprobe.probe.report import headline_of

            tables = []
            summary = self.summary()
            for dataset, task in self.run["datasets"].items():
                part = self.frame[self.frame["dataset"] == dataset]
                if part.empty:
                    continue
                metric = headline_of(task, summary[summary["dataset"] == dataset])
                paired = paired_differences(part, metric)
                if not paired.empty:
                    paired.insert(0, "dataset", dataset)
                    paired.insert(1, "metric", metric)
                    tables.append(paired)
            self._paired = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        return self._paired

    def plot(self, dataset: str, metric: str | None = None) -> "Figure":
        """The label-efficiency figure of `dataset`: `metric` (default: the headline) against
        the label budget, a panel per method, a line and 95 % band per entry."""
        from medprobe.probe.report import headline_of, label_efficiency_figure

        if dataset not in self.run["datasets"]:
            raise ToolkitError(
                f"dataset={dataset!r}: not in these results; they hold {self.datasets}",
                argument="dataset",
            )
        summary = self.summary()
        part = summary[summary["dataset"] == dataset]
        metric = metric or headline_of(self.run["datasets"][dataset], part)
        if metric not in set(part["metric"]):
            raise ToolkitError(
                f"metric={metric!r}: not among {sorted(set(part['metric']))}", argument="metric"
            )
        return label_efficiency_figure(part, dataset, metric)

    def save(self, out_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write results.csv, summary.csv, paired.csv, supports.json, run.json, report.md, the
        plots and (when kept) predictions.h5 into a new folder, published whole or not at all."""
        from medprobe.probe.report import write_report

        def write_into(folder: Path) -> None:
            self.frame.to_csv(folder / RESULTS_FILE, index=False)
            self.summary().to_csv(folder / SUMMARY_FILE, index=False)
            self.paired().to_csv(folder / PAIRED_FILE, index=False)
            (folder / SUPPORTS_FILE).write_text(json.dumps(self.supports, indent=0))
            (folder / RUN_FILE).write_text(json.dumps(self.run, indent=1))
            if self.predictions is not None:
                self.predictions.save(folder / PREDICTIONS_FILE)
            write_report(self, folder)

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
        paired_path = out_dir / PAIRED_FILE
        supports_path = out_dir / SUPPORTS_FILE
        predictions_path = out_dir / PREDICTIONS_FILE
        return cls(
            frame=pd.read_csv(out_dir / RESULTS_FILE),
            run=json.loads((out_dir / RUN_FILE).read_text()),
            supports=json.loads(supports_path.read_text()) if supports_path.is_file() else {},
            predictions=Predictions.load(predictions_path) if predictions_path.is_file() else None,
            _summary=pd.read_csv(out_dir / SUMMARY_FILE),
            _paired=_read_optional_csv(paired_path),
        )


def _read_optional_csv(path: Path) -> pd.DataFrame:
    """An empty paired.csv (one model, nothing to pair) has no columns at all."""
    if not path.is_file() or path.stat().st_size <= 1:
        return pd.DataFrame()
    return pd.read_csv(path)
