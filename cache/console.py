"""The edge where errors become one message and an exit code, shared by the three CLIs.

Exit codes: 0 success, 1 a check that found a problem (`cache verify`), 2 bad input or state
the user can fix, 130 interrupted. Library messages name library arguments as `name=value`
(`knn_k=0: …`); here they are rewritten into the command's own flags (`--knn-k 0: …`).
Logging stays at warnings unless `-v`/`--verbose` is given anywhere on the command line.
"""

import logging
import re
import sys

import typer
from rich.console import Console
from rich.markup import escape

from medprobe.cache.errors import Interrupted, ToolkitError

EXIT_CHECK_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
VERBOSE_FLAGS = ("-v", "--verbose")


def table_console() -> Console:
    """A console for tables: the terminal's width, or 140 columns when output is piped (CI
    logs, files), where rich would otherwise squeeze every table into 80."""
    console = Console()
    return console if console.is_terminal else Console(width=140)


def _flags_by_argument(app: typer.Typer) -> dict[str, tuple[str, str | None]]:
    """Library argument name -> (its CLI flag, the flag's negative form for booleans), over
    every command of `app`."""
    command = typer.main.get_command(app)
    # A group (of either click) has `commands`; a single-command app is its own only command.
    commands = getattr(command, "commands", {}).values() or [command]
    flags: dict[str, tuple[str, str | None]] = {}
    for each in commands:
        for param in each.params:
            long_flags = [o for o in param.opts if o.startswith("--")]
            negative = next(iter(getattr(param, "secondary_opts", []) or []), None)
            if param.name and long_flags:
                flags.setdefault(param.name, (long_flags[0], negative))
    return flags


# `name=value` as library messages write an argument: a list, a quoted string or one token.
_ASSIGNMENT = re.compile(r"\b([a-z][a-z0-9_]*)=(\[[^\]]*\]|'[^']*'|\"[^\"]*\"|[^\s:;,]+)")


def cli_message(error: ToolkitError, app: typer.Typer) -> str:
    """The error's text with every `argument=value` of a known argument written as the
    command's flag: `knn_k=0` -> `--knn-k 0`, `allow_fewer=True` -> `--allow-fewer`,
    `shots=[0, 5]` -> `--shots 0,5`."""
    flags = _flags_by_argument(app)

    def as_flag(match: re.Match[str]) -> str:
        name, value = match.groups()
        if name not in flags:
            return match.group(0)
        flag, negative = flags[name]
        if value == "True":
            return flag
        if value == "False":
            return negative or match.group(0)
        if value.startswith("[") and value.endswith("]"):
            items = [item.strip().strip("'\"") for item in value[1:-1].split(",")]
            value = ",".join(items) if any(items) else "''"
        return f"{flag} {value}"

    return _ASSIGNMENT.sub(as_flag, str(error))


def run_app(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run a typer app and exit with its code; a ToolkitError prints as one red line (no
    traceback, user text escaped so rich shows `[brackets]` in file names) and exits 2.

    Typer's standalone mode already turns usage errors into a message and exit 2, Ctrl-C into
    130 and `typer.Exit(code)` into `code`; what it lets through is ours to report.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in VERBOSE_FLAGS for a in args)
    args = [a for a in args if a not in VERBOSE_FLAGS]
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # soft_wrap: a message stays the one line it is, however narrow the terminal or log; no emoji:
    # ':M:' in a user's text is text.
    stderr = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
    try:
        app(args=args, standalone_mode=True)
    except ToolkitError as error:
        stderr.print(f"[bold red]error:[/] {escape(cli_message(error, app))}")
        sys.exit(error.exit_code)
    except Interrupted as interrupted:
        stderr.print(escape(str(interrupted)))
        sys.exit(EXIT_INTERRUPTED)
