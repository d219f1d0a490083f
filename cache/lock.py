"""One writer per store, through an advisory `flock` on a lock file beside it.

The kernel drops a `flock` when its holder dies, SIGKILL included, so a stale lock never blocks a
rerun; the holder's pid is written into the file so a refusal can name the live holder.

A `flock` belongs to the open file description, which `fork` shares with the child: a DataLoader
worker forked while the writer holds the lock would keep it alive after the writer is killed, and
the rerun would be refused in the name of a dead pid. So a forked child closes its copies of every
lock this process holds (closing, never unlocking, which would release the parent's lock too).
"""

import fcntl
import logging
import os
import socket
from pathlib import Path
from types import TracebackType

from medprobe.cache.errors import ToolkitError

logger = logging.getLogger(__name__)

# The locks this process holds. Process-wide by nature, as fork copies the whole process: the
# one at-fork hook below must find every held lock, whoever took it.
_HELD_LOCKS: set["StoreLock"] = set()


def _drop_inherited_locks() -> None:
    """In a forked child: close the descriptors of the parent's locks and forget them."""
    for lock in list(_HELD_LOCKS):
        lock._forget_in_child()
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


class StoreLock:
    """Exclusive, non-blocking writer lock; use as a context manager or call acquire/release."""

    def __init__(self, lock_path: Path) -> None:
        self.lock_path = Path(lock_path)
        self._fd: int | None = None

    def acquire(self) -> "StoreLock":
        """Take the lock, or raise ToolkitError naming the live holder. An OSError (a read-only
        or full disk) is raised as it is, for the caller to word for what it was doing."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._lock_current_file()
        try:
            previous = os.pread(fd, 256, 0).decode(errors="replace").strip()
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        except BaseException:
            self.release()
            raise
        if previous:
            logger.info("taking over stale lock %s left by %s", self.lock_path, previous)
        return self

    def _lock_current_file(self) -> int:
        """Open and flock the lock file; the fd of a lock that this process now holds."""
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ToolkitError(
                    f"store is being written by another process ({holder}); lock file "
                    f"{self.lock_path}. Wait for it to finish, or stop that process first."
                ) from None
            # The holder may have released and unlinked the file between our open and flock;
            # then we hold a lock on an orphaned inode and must start over on the new file.
            if self.lock_path.exists() and os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino:
                self._fd = fd
                _HELD_LOCKS.add(self)
                return fd
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        _HELD_LOCKS.discard(self)
        try:
            # Unlink before unlocking so a waiter never locks a file that is about to vanish.
            self.lock_path.unlink(missing_ok=True)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _forget_in_child(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
