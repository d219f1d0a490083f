"""One writer per store, through an advisory `flock` on a lock file beside it.

The kernel drops a `flock` when its holder dies, SIGKILL included, so a stale lock never blocks a
rerun; the holder's pid is written into the file so a refusal can name the live holder.
"""

import fcntl
import logging
import os
import socket
from pathlib import Path
from types import TracebackType

from medprobe.cache.errors import ToolkitError

logger = logging.getLogger(__name__)


class StoreLock:
    """Exclusive, non-blocking writer lock; use as a context manager or call acquire/release."""

    def __init__(self, lock_path: Path) -> None:
        self.lock_path = lock_path
        self._fd: int | None = None

    def acquire(self) -> "StoreLock":
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
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
                break
            os.close(fd)
        previous = os.pread(fd, 256, 0).decode(errors="replace").strip()
        if previous:
            logger.info("taking over stale lock %s left by %s", self.lock_path, previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink before unlocking so a waiter never locks a file that is about to vanish.
        self.lock_path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
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
