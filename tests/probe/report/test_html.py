"""report.html: one self-contained page that answers first, checked as a file and in a real
headless Chromium (skipped, with the reason, where none is installed)."""

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from medprobe.probe.report.html import write_html_report
from medprobe.probe.run.results import Results
from medprobe.probe.run.runner import probe
from tests.probe.conftest import write_blob_store

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no headless Chromium here (Debian: apt-get install chromium; .ci/run installs it)",
)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """strong beats weak at every budget, by far: the page's answer must name strong."""
    root = tmp_path_factory.mktemp("embeddings")
    for model, separation in (("strong", 3.0), ("weak", 0.2)):
        write_blob_store(root, model=model, separation=separation, n_test=60)
    out = tmp_path_factory.mktemp("runs") / "run"
    probe(
        root,
        shots=[2],
        full=True,
        seeds=3,
        methods="knn,prototype",
        bootstrap=100,
        progress=False,
        out=out,
    )
    return out


def test_the_page_is_self_contained_and_names_its_provenance(run_folder):
    page = (run_folder / "report.html").read_text()
    assert "default-src 'none'" in page  # the CSP forbids every fetch the page might make
    assert not re.search(r"https?://|\bsrc=\"(?!data:)|url\((?!#)|@import", page), (
        "external reference"
    )
    assert len(page) < 2_000_000 and page.count("<script") == 1
    assert "<svg" in page and "Caveat: fewer than 100 test images (60)" in page
    assert "mp.probe(cache_dir=" in page and "seeds=3" in page  # the call that made it
    assert "numpy" in page and "pretrained" in page and "store key" in page
    assert "paired t-test over seeds" in page and "can_reach_0.05" in page
    assert page.count(", strong (cls pooling,") == 2  # the answer at each budget names the winner


@needs_chromium
def test_in_chromium_the_page_runs_clean_sorts_on_a_click_and_answers(run_folder, tmp_path):
    """One browser run: a copy of the page with a script that clicks the score column twice
    (ascending), dumped as DOM and as a screenshot, the console on stderr."""
    clicks = (
        '<script>console.log("medprobe-check");'
        'var th = document.querySelector("table.board th[data-key=mean]");'
        "th.click(); th.click();</script></body>"
    )
    page = tmp_path / "page.html"
    page.write_text((run_folder / "report.html").read_text().replace("</body>", clicks))
    screenshot = tmp_path / "shot.png"
    browser = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,1600",
            f"--screenshot={screenshot}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    console = [line for line in browser.stderr.splitlines() if ":CONSOLE" in line]
    assert any("medprobe-check" in line for line in console), browser.stderr[-2000:]
    problems = [
        line
        for line in browser.stderr.splitlines()
        if re.search(r"Uncaught|Refused to|net::ERR|Content Security Policy", line)
    ]
    assert not problems and len(console) == 1, problems or console
    dom = browser.stdout
    board = dom[dom.index('<table class="board"') :]
    board = board[: board.index("</table>")]
    means = [float(v) for v in re.findall(r'<td data-value="([0-9.]+)" class="num">[0-9]\.', board)]
    assert len(means) == 8 and means == sorted(means), means  # sorted ascending by the script
    assert 'data-key="mean" aria-sort="ascending"' in board
    answers = re.findall(r'<li class="[a-z]+" data-budget="[^"]+">(.*?)</li>', dom)
    assert len(answers) == 2 and all(a.startswith("With ") for a in answers)
    assert all(", strong (cls pooling," in answer for answer in answers), answers
    assert "significant" in answers[0] and "weak (cls)" in answers[0]
    from PIL import Image

    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=float)
    assert pixels.std() > 20 and (pixels < 200).mean() > 0.05, "blank screenshot"


def test_paired_csv_of_one_model_has_its_header(tmp_path):
    root = tmp_path / "embeddings"
    write_blob_store(root, model="alone", separation=1.0, n_test=30)
    probe(root, shots=[2], seeds=3, methods="knn", bootstrap=0, progress=False, out=tmp_path / "r")
    paired = pd.read_csv(tmp_path / "r" / "paired.csv")
    assert paired.empty and {"entry", "best", "p_value", "can_reach_0.05"} <= set(paired.columns)
    assert Results.load(tmp_path / "r").paired_table.empty
    assert "it is the only model under k-NN" in (tmp_path / "r" / "report.html").read_text()


@dataclass
class TwelveModels:
    """A 12-model x 4-budget x 3-method run, in the shape a report reads (`RunTables`)."""

    frame: pd.DataFrame = field(default_factory=pd.DataFrame)
    summary_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    paired_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    calibration: pd.DataFrame = field(default_factory=pd.DataFrame)
    run: dict[str, Any] = field(default_factory=dict)


def twelve_models() -> TwelveModels:
    budgets = [("1-shot", "shots", 1), ("5-shot", "shots", 5), ("10-shot", "shots", 10)]
    budgets.append(("full", "full", 0))
    rows = [
        {
            "dataset": "derm",
            "model": f"m{i}",
            "pooling": "cls",
            "method": method,
            "budget": budget,
            "budget_kind": kind,
            "budget_value": value,
            "metric": "accuracy",
            "n_seeds": 5,
            "mean": 0.4 + 0.03 * i + 0.01 * value,
            "ci_low": 0.35 + 0.03 * i,
            "ci_high": min(1.0, 0.5 + 0.03 * i + 0.01 * value),
            "interval": "seeds (Student t)",
        }
        for i in range(1, 13)
        for method in ("logreg", "knn", "prototype")
        for budget, kind, value in budgets
    ]
    return TwelveModels(
        summary_table=pd.DataFrame(rows),
        run={"datasets": {"derm": {"kind": "multiclass", "label_names": list("abcdefgh")}}},
    )


def test_twelve_models_stay_apart_in_natural_order(tmp_path):
    page = write_html_report(twelve_models(), tmp_path).read_text()
    matrix = page[page.index('<table class="paired">') :]
    rows = re.findall(r"<tr><th>(m\d+):cls</th>", matrix)
    assert rows == [f"m{i}" for i in range(1, 13)]  # m2 before m10
    curves = page[page.index("<h3>Label efficiency</h3>") : page.index("<h3>Paired")]
    colours = re.findall(r"stroke: (#[0-9a-f]{6})", curves)
    assert len(set(colours) - {"#000000", "#808080", "#b0b0b0", "#ffffff"}) >= 12
    assert "The dotted line is chance" in curves


def test_a_subgroups_table_gets_its_section_when_the_run_has_one(tmp_path):
    run = twelve_models()
    assert "<h3>Subgroups</h3>" not in write_html_report(run, tmp_path).read_text()
    run.subgroups_table = pd.DataFrame(
        {"dataset": ["derm", "derm"], "group": ["sex=F", "sex=M"], "accuracy": [0.81, 0.77]}
    )
    page = write_html_report(run, tmp_path).read_text()
    assert "<h3>Subgroups</h3>" in page and "sex=M" in page and "0.770" in page
