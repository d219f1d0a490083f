"""Publishing files so that they exist whole or not at all: a store, a journal part, a results
folder. Everything is written under a temporary name that carries the writer's pid, fsynced and
renamed into place; temporaries whose writer is dead are litter a later run may remove.
"""

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from medprobe.cache.errors import ToolkitError

logger = logging.getLogger(__name__)

TEMPORARY_MARK = ".tmp-"


def temporary_name(target: Path) -> Path:
    """`.<name>.tmp-<pid>` beside `target`: hidden, and traceable to its writer."""
    return target.with_name(f".{target.name}{TEMPORARY_MARK}{os.getpid()}")


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (the directory entry is data too)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp_path)`, fsync the file, then rename it to `target`."""
    target = Path(target)
    tmp = temporary_name(target)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)


def check_folder_target(target: Path, *, overwrite: bool, argument: str = "out") -> None:
    """Refuse a folder target that `publish_folder` would refuse, before any work is done."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ToolkitError(
            f"{argument}={str(target)!r} is a file; name a folder", argument=argument
        )
    if target.exists() and not overwrite:
        raise ToolkitError(
            f"{argument}={str(target)!r} already exists; choose another folder or pass "
            "overwrite=True to replace it",
            argument=argument,
        )
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ToolkitError(
                    f"{argument}={str(target)!r}: {parent} is a file, not a folder",
                    argument=argument,
                )
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ToolkitError(
                    f"{argument}={str(target)!r}: cannot write into {parent} (permission "
                    "denied); choose a writable folder",
                    argument=argument,
                )
            break


def publish_folder(
    target: Path,
    write_into: Callable[[Path], object],
    *,
    overwrite: bool = False,
    argument: str = "out",
) -> Path:
    """Fill a fresh folder with `write_into(tmp_folder)`, then rename it to `target`.

    A reader never sees a half-written results folder, and an existing one is replaced only when
    `overwrite` is set (the old one is moved aside first and removed after the rename).
    """
    target = Path(target)
    check_folder_target(target, overwrite=overwrite, argument=argument)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    replaced = target.with_name(f".{target.name}.old{TEMPORARY_MARK}{os.getpid()}")
    try:
        write_into(tmp)
        for item in tmp.rglob("*"):
            if item.is_file():
                with open(item, "rb+") as handle:
                    os.fsync(handle.fileno())
        if target.exists():
            os.replace(target, replaced)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(replaced, ignore_errors=True)
    return target


def _writer_pid(name: str) -> int | None:
    _, mark, pid_text = name.rpartition(TEMPORARY_MARK)
    return int(pid_text) if mark and pid_text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries in `folder` (not below it) whose writing process is gone.

    A killed run leaves `.<name>.tmp-<pid>` behind, as large as what it was writing; nothing
    else will ever finish or remove it. A live writer's temporaries are left alone.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        pid = _writer_pid(entry.name) if entry.name.startswith(".") else None
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        logger.info("removed %s, left by process %d which is gone", entry, pid)
        removed.append(entry)
    return removed
