"""Running `probe …` as the installed command does, for the hostile-input tests."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from medprobe.cache.console import run_app
from medprobe.probe.cli import app

QUICK = ("--shots", "2", "--seeds", "2", "--bootstrap", "0", "--methods", "prototype")


@dataclass
class Outcome:
    exit_code: int
    output: str
    error: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `probe ARGS…` as the installed command does (`run_app`): exit code, stdout, stderr."""
    monkeypatch.setenv("COLUMNS", "60")  # a message that wrapped would span lines

    def run(*args: object) -> Outcome:
        with pytest.raises(SystemExit) as exited:
            run_app(app, [str(a) for a in args])
        out, err = capsys.readouterr()
        return Outcome(exited.value.code or 0, out, err)

    return run


def one_line(result: Outcome) -> str:
    """The one line a refused command writes to stderr."""
    lines = result.error.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.error
    return lines[0]


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
