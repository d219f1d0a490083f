"""The disk as a user meets it: free space checked before a large write, and the OS errors of a
full, read-only or misnamed cache turned into one line that names the place and the fix."""

import errno
import os
import shutil
from pathlib import Path

from medprobe.cache.errors import ToolkitError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
WHERE_TO = "choose a writable --cache-dir (or $MEDPROBE_CACHE_DIR)"


def human_size(n_bytes: float) -> str:
    """1536 -> '1.5 KiB'."""
    if n_bytes < 1024:
        return f"{n_bytes:.0f} B"
    size = float(n_bytes)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} TiB"


def existing_ancestor(path: Path) -> Path:
    """The nearest part of `path` that exists (the folder whose file system will hold it)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Bytes this user may still write on the file system that holds (or will hold) `path`."""
    return shutil.disk_usage(existing_ancestor(path)).free


def require_free_space(path: Path, needed_bytes: int, *, what: str, then: str) -> None:
    """Refuse before writing `needed_bytes` at `path` when the file system has less free: a
    clean refusal now, instead of a write that fails half way."""
    free = free_bytes(path)
    if free < needed_bytes:
        raise ToolkitError(
            f"not enough space for {what}: it needs about {human_size(needed_bytes)} and "
            f"{human_size(free)} is free under {existing_ancestor(path)}; free space or "
            f"{WHERE_TO}, {then}"
        )


def os_failure(
    error: OSError,
    path: Path,
    *,
    doing: str,
    needed_bytes: int | None = None,
    fix: str = WHERE_TO,
    then: str = "",
) -> ToolkitError:
    """`error`, raised while `doing` (e.g. 'writing') `path`, as one line: what failed, where,
    and `fix`; `then` says what happens after the fix (e.g. 'then rerun: it resumes')."""
    path = Path(path)
    then = f", {then}" if then else ""
    if error.errno in NO_SPACE:
        needs = f"; about {human_size(needed_bytes)} more is needed" if needed_bytes else ""
        return ToolkitError(
            f"no space left on the device while {doing} {path}{needs} and "
            f"{human_size(free_bytes(path))} is free; free space or {fix}{then}"
        )
    if error.errno in NOT_WRITABLE:
        folder = existing_ancestor(path.parent)
        reason = "read-only file system" if error.errno == errno.EROFS else "permission denied"
        return ToolkitError(
            f"cannot write in {folder} ({reason}) while {doing} {path}; {fix}{then}"
        )
    if error.errno == errno.ENOTDIR:
        return ToolkitError(
            f"cannot use {path}: {existing_ancestor(path)} is a file, not a folder; {fix}{then}"
        )
    return ToolkitError(f"{doing} {path} failed ({error.strerror or error}); {fix}{then}")
