"""Checking what a user passes, the same way from a CLI flag or a keyword argument: comma lists,
whole numbers and numbers, each error naming the argument (`shots=`), which the CLI edge
rewrites into its flag (`--shots`)."""

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medprobe.cache.errors import ToolkitError


def names(argument: str, value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """('a', 'b') from 'a,b', 'a' or ['a', 'b']; None stays None (no selection)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not all(isinstance(i, str) for i in items):
        raise ToolkitError(
            f"{argument}={value!r}: expected a name, comma-separated names or a list of names",
            argument=argument,
        )
    return tuple(dict.fromkeys(item.strip() for item in items if item.strip())) or None


def numbers(
    argument: str, value: object, kind: type[int] | type[float], example: str
) -> tuple[int | float, ...]:
    """(1, 5, 10) from '1,5,10', 5 or [1, 5, 10]: whole numbers for `kind=int` (2.0 is 2, 2.5
    is refused), finite numbers for `float`; an empty item ('1,,5') is refused, not skipped."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: Sequence[object] = [item.strip() for item in value.split(",")]
        if value.strip() and any(item == "" for item in items):
            raise ToolkitError(
                f"{argument}={value!r}: an empty item between commas; e.g. {argument}={example!r}",
                argument=argument,
            )
        items = [item for item in items if item]
    elif isinstance(value, int | float | np.integer | np.floating):
        items = [value]
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise ToolkitError(
            f"{argument}={value!r}: expected a number or a list of numbers, e.g. {example!r}",
            argument=argument,
        )
    return tuple(_number(argument, value, item, kind, example) for item in items)


def _number(
    argument: str, whole: object, item: object, kind: type[int] | type[float], example: str
) -> int | float:
    what = "a whole number" if kind is int else "a number"
    if isinstance(item, bool):
        raise ToolkitError(f"{argument}={whole!r}: {item!r} is not {what}", argument=argument)
    try:
        number = float(item)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ToolkitError(
            f"{argument}={whole!r}: {item!r} is not {what}; e.g. {argument}={example!r}",
            argument=argument,
        ) from None
    if not math.isfinite(number) or (kind is int and not number.is_integer()):
        raise ToolkitError(f"{argument}={whole!r}: {item!r} is not {what}", argument=argument)
    return int(number) if kind is int else number


def whole(argument: str, value: object, minimum: int, why: str, maximum: int | None = None) -> int:
    """A whole number within [minimum, maximum]; `why` says what the bound protects."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ToolkitError(f"{argument}={value!r}: expected a whole number", argument=argument)
    if value < minimum:
        raise ToolkitError(
            f"{argument}={value}: must be at least {minimum} ({why})", argument=argument
        )
    if maximum is not None and value > maximum:
        raise ToolkitError(f"{argument}={value}: at most {maximum:,} ({why})", argument=argument)
    return int(value)


def folder(argument: str, value: object) -> Path | None:
    """A path from str or os.PathLike; None stays None."""
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise ToolkitError(
            f"{argument}={value!r}: expected a folder path (str or pathlib.Path)",
            argument=argument,
        )
    return Path(value)


def choice(argument: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ToolkitError(
            f"{argument}={value!r}: choose one of {', '.join(choices)}", argument=argument
        )
    return str(value)


def flag(argument: str, value: object) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ToolkitError(f"{argument}={value!r}: expected True or False", argument=argument)
    return bool(value)
