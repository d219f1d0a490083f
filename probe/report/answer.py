"""The answer a reader wants first: at each label budget, which entry (model, pooling, method)
scores best on the headline metric, with its interval, and whether its lead over the
runner-up is significant under the paired test. One sentence per budget, shared by the
terminal, report.md and report.html.

The runner-up is the best *other model or pooling under the same probe* as the winner: that
comparison is paired (same support sets, same test resamples) and is the row paired.csv holds.
"""

import math
from dataclasses import dataclass

import pandas as pd

from medprobe.probe.report.tables import budget_order, interval_cell
from medprobe.probe.stats.paired import SIGNIFICANCE, entry_name

METHOD_WORDS = {"logreg": "logistic regression", "knn": "k-NN", "prototype": "nearest prototype"}


@dataclass(frozen=True)
class Answer:
    """One budget's verdict: `best` and `runner_up` are 'model:pooling' entries (runner-up
    None when the winner is alone under its probe); `significant` None when no paired test
    could be run."""

    budget: str
    model: str
    pooling: str
    method: str
    cell: str
    runner_up: str | None
    significant: bool | None
    sentence: str


def budget_words(budget: str) -> str:
    """'5-shot' -> '5 labelled images per class'; '0.1 of train' -> '10% of the training
    labels'; 'full' -> 'every training label'."""
    if budget == "full":
        return "every training label"
    if budget.endswith("-shot"):
        shots = int(budget.split("-")[0])
        return f"{shots} labelled image{'s' if shots != 1 else ''} per class"
    try:
        return f"{float(budget.split()[0]):.0%} of the training labels"
    except ValueError:
        return budget


def pooling_words(pooling: str) -> str:
    """'cls' -> 'cls pooling'; 'pooled' (the library's own pooled output) -> 'pooled features'."""
    return "pooled features" if pooling == "pooled" else f"{pooling} pooling"


def _paired_row(paired: pd.DataFrame, method: str, budget: str, entry: str) -> pd.Series | None:
    if paired.empty or "entry" not in paired.columns:
        return None
    rows = paired[
        (paired["method"] == method) & (paired["budget"] == budget) & (paired["entry"] == entry)
    ]
    return None if rows.empty else rows.iloc[0]


def budget_answers(
    summary: pd.DataFrame, paired: pd.DataFrame, dataset: str, metric: str
) -> list[Answer]:
    """Per budget of `dataset` (in budget order), the best entry on `metric` (higher is better:
    every headline metric is) and how far its lead holds under the paired test."""
    table = summary[(summary["dataset"] == dataset) & (summary["metric"] == metric)].copy()
    if table.empty:
        return []
    table["entry"] = entry_name(table)
    if not paired.empty and "dataset" in paired.columns:
        paired = paired[(paired["dataset"] == dataset) & (paired["metric"] == metric)]
    answers = []
    for budget in budget_order(table):
        cell = table[table["budget"] == budget]
        # highest mean first; ties broken as paired.csv breaks them (first entry by name)
        cell = cell.sort_values(["mean", "entry"], ascending=[False, True], kind="stable")
        best = cell.iloc[0]
        rivals = cell[(cell["method"] == best["method"]) & (cell["entry"] != best["entry"])]
        runner_up = rivals.iloc[0] if not rivals.empty else None
        shown = interval_cell(best["mean"], best["ci_low"], best["ci_high"], best["interval"])
        method = METHOD_WORDS.get(best["method"], best["method"])
        sentence = (
            f"With {budget_words(budget)}, {best['model']} ({pooling_words(best['pooling'])}, "
            f"{method}) "
            f"scores best: {metric} {shown}"
        )
        significant = None
        if runner_up is None:
            sentence += f"; it is the only model under {method}, so there is nothing to pair."
        else:
            row = _paired_row(paired, best["method"], budget, runner_up["entry"])
            rival = f"{runner_up['model']} ({runner_up['pooling']})"
            if row is None or math.isnan(row["p_value"]):
                sentence += f"; no paired test against {rival} (one fit and no test bootstrap)."
            else:
                significant = bool(row["p_value"] < SIGNIFICANCE)
                lead = 0.0 - row["difference"]
                interval = (
                    ""
                    if math.isnan(row["ci_low"])
                    else f" [{0.0 - row['ci_high']:.3f}, {0.0 - row['ci_low']:.3f}]"
                )
                verdict = "significant" if significant else "not significant"
                test = f"({row['test']}, p = {row['p_value']:.3g}, n = {int(row['n'])})"
                if lead == 0:
                    sentence += f"; it ties with {rival} {test}"
                else:
                    sentence += (
                        f"; its lead of {lead:.3f}{interval} over {rival} is {verdict} {test}"
                    )
                if not bool(row.get("can_reach_0.05", True)):
                    sentence += f", a test that cannot reach p < {SIGNIFICANCE} with this n"
                sentence += "."
        answers.append(
            Answer(
                budget=budget,
                model=str(best["model"]),
                pooling=str(best["pooling"]),
                method=str(best["method"]),
                cell=shown,
                runner_up=None if runner_up is None else str(runner_up["entry"]),
                significant=significant,
                sentence=sentence,
            )
        )
    return answers
