"""Publishing files so that they exist whole or not at all: a store, a journal part, a results
folder. Everything is written under a temporary name that carries the writer's pid, fsynced and
renamed into place; temporaries whose writer is dead are litter a later run may remove.
"""

import ctypes
import errno
import functools
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
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


class PublishFailed(ToolkitError):
    """Writing a folder's files failed (the disk filled up, the folder became read-only): a
    failure, not a mistake in the arguments; nothing was published and no temporary is left."""


class PublishConflict(ToolkitError):
    """Another run published the target folder first; this run's files were kept elsewhere."""


WRITER_MARKER = ".writer"  # inside a folder's temporary: '<host> <pid>' of the run writing it
# A temporary folder without a marker is younger than this while its writer creates the marker.
UNMARKED_GRACE_SECONDS = 60


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_folder_target(
    target: Path,
    *,
    overwrite: bool,
    argument: str = "out",
    protected: Sequence[Path] = (),
    marker: str | None = None,
) -> None:
    """Refuse a folder target that `publish_folder` would refuse, before any work is done.

    protected: what the run reads (the cache root, its stores) that the target may neither be
    nor hold, with or without `overwrite` (replacing it would delete them). marker: the file every
    folder this kind of run writes holds (`run.json`); `overwrite` replaces only a folder that
    holds it or is empty, never a folder of the user's other files.
    """
    target = Path(os.path.abspath(target))
    for path in protected:
        path = Path(os.path.abspath(path))
        if _is_within(path, target) or _is_within(path.resolve(), target.resolve()):
            raise ToolkitError(
                f"{argument}={str(target)!r} is or holds {str(path)!r}, which this run reads; "
                "publishing there would replace it; choose a folder outside the cache root",
                argument=argument,
            )
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
    if target.is_dir() and marker is not None:
        _refuse_foreign_folder(target, marker, argument)
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


def _refuse_foreign_folder(target: Path, marker: str, argument: str) -> None:
    """overwrite=True replaces a folder this kind of run wrote (it holds `marker`) or an empty
    one; anything else may be a user's files, or a cache, and is refused by name."""
    try:
        entries = sorted(entry.name for entry in target.iterdir())
    except OSError as error:
        raise ToolkitError(
            f"{argument}={str(target)!r} cannot be read ({error.strerror}); choose another folder",
            argument=argument,
        ) from None
    if entries and marker not in entries:
        shown = ", ".join(entries[:3]) + (
            f" and {len(entries) - 3} more" if len(entries) > 3 else ""
        )
        raise ToolkitError(
            f"{argument}={str(target)!r} holds {shown} but no {marker}, so it is not a folder "
            "this command wrote; overwrite=True replaces only such a folder (or an empty one); "
            "choose a new folder",
            argument=argument,
        )
    stores = [
        path
        for path in target.rglob("*.h5*")
        if path.name.endswith((".h5", ".journal", ".lock")) and "--" in path.name
    ]
    if stores:
        raise ToolkitError(
            f"{argument}={str(target)!r} holds a store ({stores[0]}); overwrite=True would "
            "delete it; choose another folder",
            argument=argument,
        )


def publish_folder(
    target: Path,
    write_into: Callable[[Path], object],
    *,
    overwrite: bool = False,
    argument: str = "out",
    protected: Sequence[Path] = (),
    marker: str | None = None,
) -> Path:
    """Fill a fresh folder with `write_into(tmp_folder)`, then rename it to `target`.

    A reader never sees a half-written results folder. Without `overwrite` the rename refuses
    an existing target atomically (RENAME_NOREPLACE, or a rename onto a folder that is not
    empty): of two runs publishing to one folder, the second keeps its files under a named
    folder beside it and raises `PublishConflict` saying where. With `overwrite` an existing
    folder (see `check_folder_target` for which) is moved aside, replaced and removed. Temporaries
    of runs that were killed are removed first; a write that fails (disk full) raises
    `PublishFailed` and leaves nothing behind.
    """
    target = Path(os.path.abspath(target))
    check_folder_target(
        target, overwrite=overwrite, argument=argument, protected=protected, marker=marker
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent)
    tmp = temporary_name(target)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / WRITER_MARKER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    replaced = target.with_name(f".{target.name}.old{TEMPORARY_MARK}{os.getpid()}")
    try:
        try:
            write_into(tmp)
            for item in tmp.rglob("*"):
                if item.is_file() and item.name != WRITER_MARKER:
                    with open(item, "rb+") as handle:
                        os.fsync(handle.fileno())
        except OSError as error:
            raise PublishFailed(
                f"writing {argument}={str(target)!r} failed ({describe_os_error(error)}); "
                "nothing was published; free space or choose another folder, then rerun"
            ) from error
        if overwrite and target.exists():
            check_folder_target(target, overwrite=True, argument=argument, marker=marker)
            os.replace(target, replaced)
            os.replace(tmp, target)
        elif not _rename_no_replace(tmp, target):
            kept = _keep_aside(tmp, target)
            raise PublishConflict(
                f"{argument}={str(target)!r} was published by another run while this one ran; "
                f"its files are untouched and this run's are in {kept}; move them where you "
                "want them",
                argument=argument,
            )
        (target / WRITER_MARKER).unlink()
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(replaced, ignore_errors=True)
    return target


def describe_os_error(error: OSError) -> str:
    """An OSError (HDF5's too, which carries the errno in its text) as a few words."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT) or "errno = 28" in str(error):
        return "no space left on the device"
    if error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return str(error).splitlines()[0] if str(error) else type(error).__name__


_RENAME_NOREPLACE = 1  # linux/fs.h


def _rename_no_replace(source: Path, target: Path) -> bool:
    """Rename `source` to `target` unless `target` exists, as one atomic step; False when it
    exists. renameat2(RENAME_NOREPLACE) where the C library has it; elsewhere a rename, which
    the kernel refuses onto a folder that is not empty (an empty one holds nothing to lose)."""
    renameat2 = _renameat2()
    if renameat2 is not None:
        at_cwd = -100  # AT_FDCWD
        result = renameat2(
            at_cwd, os.fsencode(source), at_cwd, os.fsencode(target), _RENAME_NOREPLACE
        )
        if result == 0:
            return True
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            return False
        if code not in (errno.EINVAL, errno.ENOSYS):  # else: the file system lacks the flag
            raise OSError(code, os.strerror(code), str(target))
    try:
        os.rename(source, target)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            return False
        raise
    return True


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    function.argtypes += [ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _keep_aside(tmp: Path, target: Path) -> Path:
    """A visible, unique folder beside `target` for a run's files that could not be published
    there (not a hidden temporary: those are removed once their writer is gone)."""
    for attempt in range(1000):
        suffix = f"-unpublished-{os.getpid()}" + (f"-{attempt}" if attempt else "")
        kept = target.with_name(f"{target.name}{suffix}")
        if _rename_no_replace(tmp, kept):
            (kept / WRITER_MARKER).unlink(missing_ok=True)
            return kept
    raise PublishFailed(f"could not keep this run's files beside {target}; they are lost")


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
    else will ever finish or remove it. A live writer's temporaries are left alone, and so is a
    temporary folder whose marker names another host (its writer's pid means nothing here) or
    that has no marker yet and is new (its writer may be about to write one).
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    host = socket.gethostname()
    for entry in folder.iterdir():
        pid = _writer_pid(entry.name) if entry.name.startswith(".") else None
        if pid is None or pid == os.getpid():
            continue
        if entry.is_dir():
            try:
                writer_host, _, marked_pid = (entry / WRITER_MARKER).read_text().partition(" ")
            except OSError:
                writer_host, marked_pid = None, ""
            if writer_host is not None and (writer_host != host or marked_pid.strip() != str(pid)):
                continue
            try:
                age = time.time() - entry.stat().st_mtime
            except OSError:  # removed meanwhile
                continue
            if writer_host is None and age < UNMARKED_GRACE_SECONDS:
                continue
        if _alive(pid):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        logger.info("removed %s, left by process %d which is gone", entry, pid)
        removed.append(entry)
    return removed
