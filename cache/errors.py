"""The one error type a user can cause and fix.

It lives in `cache/` because every stage imports `cache/` and nothing else is shared: extract and
probe raise it, and only the CLIs turn it into a message and an exit code.
"""


class ToolkitError(Exception):
    """Bad input or state a user can fix; the message names the value, the limit and the fix."""
