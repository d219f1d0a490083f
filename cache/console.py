"""The edge where errors become one message and an exit code, shared by the three CLIs.

Exit codes: 0 success, 1 a check that found a problem (`cache verify`), 2 bad input or state
the user can fix, 130 interrupted. Library messages name library arguments (`knn_k=0: …`);
here they are rewritten into the command's own flags (`--knn-k 0: …`). Logging stays at
warnings unless `-v`/`--verbose` is given anywhere on the command line.
"""

import logging
import sys

import click
import typer
from rich.console import Console
from rich.markup import escape

from medprobe.cache.errors import Interrupted, ToolkitError

# Usage errors (unknown option, missing argument) as the running typer raises them: typer 0.2x
# carries its own copy of click, whose exceptions derive from typer.TyperException, not from
# click's; older typer raises click's own.
USAGE_ERRORS: tuple[type[Exception], ...] = (
    click.ClickException,
    *([typer.TyperException] if hasattr(typer, "TyperException") else []),
)
EXIT_CHECK_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
VERBOSE_FLAGS = ("-v", "--verbose")


def table_console() -> Console:
    """A console for tables: the terminal's width, or 140 columns when output is piped (CI
    logs, files), where rich would otherwise squeeze every table into 80."""
    console = Console()
    return console if console.is_terminal else Console(width=140)


def _flags_by_argument(app: typer.Typer) -> dict[str, str]:
    """Library argument name -> the CLI flag that sets it, over every command of `app`."""
    command = typer.main.get_command(app)
    # A group (of either click) has `commands`; a single-command app is its own only command.
    commands = getattr(command, "commands", {}).values() or [command]
    flags: dict[str, str] = {}
    for each in commands:
        for param in each.params:
            long_flags = [o for o in param.opts if o.startswith("--")]
            if param.name and long_flags:
                flags.setdefault(param.name, long_flags[0])
    return flags


def cli_message(error: ToolkitError, app: typer.Typer) -> str:
    """The error's text with a leading `argument=value` written as the CLI flag."""
    message = str(error)
    if error.argument is not None and message.startswith(f"{error.argument}="):
        flag = _flags_by_argument(app).get(error.argument)
        if flag is not None:
            message = f"{flag} {message[len(error.argument) + 1 :]}"
    return message


def run_app(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run a typer app and exit with its code; a ToolkitError prints as one red line (no
    traceback, user text escaped so rich shows `[brackets]` in file names) and exits 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in VERBOSE_FLAGS for a in args)
    args = [a for a in args if a not in VERBOSE_FLAGS]
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # soft_wrap: a message stays the one line it is, however narrow the terminal or log.
    stderr = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        code = app(args=args, standalone_mode=False)
    except ToolkitError as error:
        stderr.print(f"[bold red]error:[/] {escape(cli_message(error, app))}")
        sys.exit(EXIT_USER_ERROR)
    except Interrupted as interrupted:
        stderr.print(escape(str(interrupted)))
        sys.exit(EXIT_INTERRUPTED)
    except (typer.Abort, KeyboardInterrupt):
        stderr.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except USAGE_ERRORS as error:  # usage errors arrive here in non-standalone mode
        error.show()  # type: ignore[attr-defined]
        sys.exit(error.exit_code)  # type: ignore[attr-defined]
    # Non-standalone typer returns an Exit's code instead of raising it; Ctrl-C arrives as 130.
    if code == EXIT_INTERRUPTED:
        stderr.print("interrupted")
    sys.exit(code if isinstance(code, int) else 0)
