"""The results of `similarity`: tidy rows, a matrix and a heatmap per (dataset, metric), and the
folder they are published to (similarity.csv, similarity.md, similarity.json, one PNG each)."""

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medprobe.cache.errors import ToolkitError
from medprobe.cache.files.atomic import publish_folder

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CSV_FILE = "similarity.csv"
MARKDOWN_FILE = "similarity.md"
SETTINGS_FILE = "similarity.json"
COLUMNS = ["dataset", "a", "b", "metric", "value", "n_rows"]
INTERVAL_COLUMNS = ["ci_low", "ci_high"]
METRIC_TITLES = {
    "cka": "linear CKA",
    "cka_debiased": "debiased linear CKA",
    "mutual_knn": "mutual k-NN alignment",
}


def cluster_order(matrix: pd.DataFrame) -> list[str]:
    """Entries in the leaf order of average-linkage clustering on 1 - similarity (optimal leaf
    ordering), so alike entries sit side by side; NaN counts as the largest distance."""
    names = list(matrix.index)
    if len(names) < 3:
        return names
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    distance = 1 - matrix.to_numpy(dtype=float)
    distance = np.where(np.isnan(distance), np.nanmax(distance, initial=1.0), distance)
    distance = np.clip((distance + distance.T) / 2, 0, None)
    np.fill_diagonal(distance, 0)
    links = linkage(squareform(distance, checks=False), method="average", optimal_ordering=True)
    return [names[i] for i in leaves_list(links)]


def _file_stem(dataset: str, metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{dataset}_{metric}")


@dataclass(frozen=True, eq=False)
class SimilarityResults:
    """frame: one row per (dataset, unordered pair of entries a ≤ b, metric) with `value` and
    `n_rows` (+ `ci_low`, `ci_high` under a bootstrap); settings: the arguments used;
    datasets: per dataset, its entries, stores and how its rows were chosen."""

    frame: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(self.frame["metric"]))

    def _rows(self, dataset: str, metric: str) -> pd.DataFrame:
        known = list(dict.fromkeys(self.frame["dataset"]))
        if dataset not in known:
            raise ToolkitError(
                f"dataset={dataset!r}: not in these results; they hold {known}", argument="dataset"
            )
        if metric not in self.metrics:
            raise ToolkitError(
                f"metric={metric!r}: not in these results; they hold {self.metrics}",
                argument="metric",
            )
        return self.frame[(self.frame["dataset"] == dataset) & (self.frame["metric"] == metric)]

    def matrix(self, dataset: str, metric: str, column: str = "value") -> pd.DataFrame:
        """The symmetric (entries x entries) matrix of `column`, in the entries' listing order."""
        rows = self._rows(dataset, metric)
        entries = self.datasets.get(dataset, {}).get("entries") or list(
            dict.fromkeys([*rows["a"], *rows["b"]])
        )
        matrix = pd.DataFrame(np.nan, index=entries, columns=entries)
        for a, b, value in zip(rows["a"], rows["b"], rows[column], strict=True):
            matrix.loc[a, b] = matrix.loc[b, a] = value
        return matrix

    def plot(self, dataset: str, metric: str) -> "Figure":
        """A heatmap of one dataset's metric: values written in the cells, entries ordered by
        clustering, cell and font sizes set from the number of entries so 20+ stay legible."""
        from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no GUI backend

        matrix = self.matrix(dataset, metric)
        order = cluster_order(matrix)
        values = matrix.loc[order, order].to_numpy(dtype=float)
        n_entries = len(order)
        cell = float(np.clip(4.0 / n_entries, 0.42, 0.9))  # inches per cell
        label_inches = 0.075 * max(len(name) for name in order) + 0.3
        figure = Figure(
            figsize=(n_entries * cell + label_inches + 1.4, n_entries * cell + label_inches + 0.7),
            layout="constrained",
        )
        axis = figure.add_subplot()
        low = min(0.0, float(np.nanmin(values, initial=0.0)))
        image = axis.imshow(values, cmap="viridis", vmin=low, vmax=1.0)
        text_size = float(np.clip(cell * 72 * 0.3, 6, 11))
        for i in range(n_entries):
            for j in range(n_entries):
                value = values[i, j]
                shade = (value - low) / (1 - low) if not math.isnan(value) else 0.0
                axis.text(
                    j,
                    i,
                    "-" if math.isnan(value) else f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=text_size,
                    color="black" if shade > 0.6 else "white",
                )
        label_size = float(np.clip(cell * 72 * 0.28, 6, 10))
        axis.set_xticks(range(n_entries), order, rotation=60, ha="right", fontsize=label_size)
        axis.set_yticks(range(n_entries), order, fontsize=label_size)
        figure.colorbar(image, ax=axis, shrink=0.8)
        n_rows = int(self._rows(dataset, metric)["n_rows"].iloc[0])
        axis.set_title(
            f"{dataset}: {METRIC_TITLES.get(metric, metric)}, {n_rows:,} images",
            fontsize=max(label_size + 2, 11),
        )
        return figure

    def to_markdown(self, title: str = "Representation similarity") -> str:
        """similarity.md: settings, then per dataset and metric a clustered matrix and its plot."""
        settings = self.settings
        has_intervals = INTERVAL_COLUMNS[0] in self.frame.columns
        max_rows = settings.get("max_rows")
        lines = [
            f"# {title}",
            "",
            f"Metrics: {', '.join(self.metrics)}; split: {settings.get('split', 'all')}; "
            "rows matched by image id, "
            + (
                "every shared row"
                if max_rows is None
                else f"at most {max_rows:,} sampled (seed {settings.get('seed', 0)})"
            )
            + f"; mutual k-NN with k = {settings.get('knn_k')} "
            "(cosine, each image's own row excluded).",
            "",
        ]
        if has_intervals:
            lines += [
                f"Intervals: 95 % percentile bootstrap over images, {settings['bootstrap']} "
                "replicates (for mutual k-NN the neighbour sets stay those of the full sample).",
                "",
            ]
        for dataset, info in self.datasets.items():
            lines += [f"## {dataset}", "", _rows_sentence(info), ""]
            for metric in self.metrics:
                matrix = self.matrix(dataset, metric)
                order = cluster_order(matrix)
                cells = matrix.loc[order, order].map(lambda v: f"{v:.3f}")
                if has_intervals:
                    low = self.matrix(dataset, metric, "ci_low").loc[order, order]
                    high = self.matrix(dataset, metric, "ci_high").loc[order, order]
                    cells = cells + " [" + low.map("{:.3f}".format) + ", "
                    cells = cells + high.map("{:.3f}".format) + "]"
                lines += [
                    f"### {METRIC_TITLES.get(metric, metric)} (`{metric}`)",
                    "",
                    cells.rename_axis("entry")
                    .reset_index()
                    .to_markdown(index=False, disable_numparse=True),
                    "",
                    f"![{dataset} {metric}]({_file_stem(dataset, metric)}.png)",
                    "",
                ]
        return "\n".join(lines)

    def metric_title(self, metric: str) -> str:
        """'linear CKA' for 'cka': the words a figure or page uses for a metric."""
        return METRIC_TITLES.get(metric, metric)

    @classmethod
    def load(cls, out_dir: str | Path) -> "SimilarityResults":
        """A folder as `save` wrote it (similarity.csv and similarity.json)."""
        out_dir = Path(out_dir)
        if not (out_dir / CSV_FILE).is_file() or not (out_dir / SETTINGS_FILE).is_file():
            raise ToolkitError(
                f"{out_dir} is not a similarity results folder (needs {CSV_FILE} and "
                f"{SETTINGS_FILE}, as `probe similarity --out` writes)",
                argument="similarity",
            )
        recorded = json.loads((out_dir / SETTINGS_FILE).read_text())
        return cls(
            frame=pd.read_csv(out_dir / CSV_FILE),
            settings=recorded.get("settings", {}),
            datasets=recorded.get("datasets", {}),
        )

    def save(
        self,
        out_dir: str | Path,
        *,
        overwrite: bool = False,
        protected: Sequence[Path] = (),
        argument: str = "out_dir",
    ) -> Path:
        """Publish similarity.csv, similarity.md, similarity.json and one heatmap PNG per
        (dataset, metric) as one folder, complete or not at all; returns the folder. It may
        never be or hold the stores compared, nor `protected` (the cache root); overwrite=True
        replaces only a folder this wrote (see `publish_folder`). (`probe similarity` then adds
        similarity.html, rendered by `probe.report.html`.)"""
        protected = [
            *protected,
            *(Path(s["path"]) for i in self.datasets.values() for s in i["stores"]),
        ]

        def write_into(folder: Path) -> None:
            self.frame.to_csv(folder / CSV_FILE, index=False)
            (folder / MARKDOWN_FILE).write_text(self.to_markdown())
            (folder / SETTINGS_FILE).write_text(
                json.dumps({"settings": self.settings, "datasets": self.datasets}, indent=1)
            )
            for dataset in self.datasets:
                for metric in self.metrics:
                    figure = self.plot(dataset, metric)
                    figure.savefig(folder / f"{_file_stem(dataset, metric)}.png", dpi=110)

        return publish_folder(
            Path(out_dir),
            write_into,
            overwrite=overwrite,
            argument=argument,
            protected=protected,
            marker=SETTINGS_FILE,
        )


def _rows_sentence(info: dict[str, Any]) -> str:
    stores = info.get("ids_per_store", {})
    sentence = f"{info['n_rows']:,} images"
    if info.get("n_shared", info["n_rows"]) != info["n_rows"]:
        sentence += f", sampled from the {info['n_shared']:,} shared ids"
    if len(set(stores.values())) > 1:
        counts = ", ".join(f"{name} {count:,}" for name, count in stores.items())
        sentence += f" (ids present in every store; per store: {counts})"
    return sentence + f"; {len(info.get('entries', []))} entries."
