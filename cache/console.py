"""The edge where a ToolkitError becomes a message and an exit code, shared by the three CLIs."""

import logging
import sys

import typer
from rich.console import Console

from medprobe.cache.errors import ToolkitError

EXIT_USER_ERROR = 2


def table_console() -> Console:
    """A console for tables: the terminal's width, or 140 columns when output is piped (CI
    logs, files), where rich would otherwise squeeze every table into 80."""
    console = Console()
    return console if console.is_terminal else Console(width=140)


def run_app(app: typer.Typer) -> None:
    """Run a typer app; a ToolkitError prints as one red line (no traceback) and exits 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(standalone_mode=False)
    except ToolkitError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False)
        sys.exit(EXIT_USER_ERROR)
    except (typer.Abort, KeyboardInterrupt):
        Console(stderr=True).print("interrupted; finished rows are kept and a rerun resumes")
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except Exception as error:  # click's usage errors arrive here in non-standalone mode
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise
