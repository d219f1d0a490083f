"""The error types a user can cause and fix.

They live in `cache/` because every stage imports `cache/` and nothing else is shared: extract and
probe raise them, and only the CLIs turn them into a message and an exit code.
"""


class ToolkitError(Exception):
    """Bad input or state a user can fix; the message names the value, the limit and the fix.

    Messages write library arguments as `name=value` (`knn_k=0: every k must be at least 1`;
    `… or pass allow_fewer=True`), which a CLI rewrites into its own flags (`--knn-k 0`,
    `--allow-fewer`); `argument` names the argument the error is about, when there is one.
    `exit_code`: what the CLI exits with, 2 for a user's mistake; a subclass for a failure the
    user did not cause (a cluster that went away) sets 1.
    """

    exit_code: int = 2

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class Interrupted(BaseException):
    """Ctrl-C that stopped work, re-raised with what was kept and how to resume.

    A BaseException like KeyboardInterrupt, so no `except Exception` swallows it, but not a
    KeyboardInterrupt, which typer would turn into a bare exit code and lose the message.
    """
