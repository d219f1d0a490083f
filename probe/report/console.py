"""The run's headline tables and rankings on the terminal."""

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medprobe.probe.report.answer import budget_answers
from medprobe.probe.report.tables import CELL_KEY, RunTables, headline_table
from medprobe.probe.stats.paired import headline_of, ranking


def print_report(results: RunTables, console: Console) -> None:
    """The headline table and ranking of each dataset, on the terminal."""
    summary = results.summary_table
    for dataset, task in results.run["datasets"].items():
        part = summary[summary["dataset"] == dataset]
        if part.empty:
            continue
        metric = headline_of(task, part)
        pivot = headline_table(part, metric)
        table = Table(title=escape(f"{dataset}: {metric}"), caption=escape(CELL_KEY))
        table.add_column("model:pooling", no_wrap=True)
        table.add_column("method")
        for budget in pivot.columns:
            table.add_column(budget, justify="right")
        for (entry, method), values in pivot.iterrows():
            table.add_row(escape(entry), method, *(str(v) for v in values))
        console.print(table)
        for answer in budget_answers(summary, results.paired_table, dataset, metric):
            console.print(escape(answer.sentence), highlight=False)
        ranked = ranking(part, metric)
        console.print(
            "ranking: "
            + ", ".join(
                f"{i + 1}. {escape(e)} (mean rank {r:.1f})"
                for i, (e, r) in enumerate(zip(ranked["entry"], ranked["mean_rank"], strict=True))
            ),
            highlight=False,
        )
