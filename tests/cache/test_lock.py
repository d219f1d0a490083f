"""The writer lock dies with the process that took it, even when that process forked children
(DataLoader workers) that live on: a flock belongs to the open file description, which fork
shares, so the children must close their copies."""

import os
import signal
import subprocess
import sys

import pytest

from medprobe.cache import ToolkitError
from medprobe.cache.lock import StoreLock

HOLDER = """
import os, sys, time
from pathlib import Path
from medprobe.cache.lock import StoreLock

lock = StoreLock(Path(sys.argv[1])).acquire()
child = os.fork()
if child == 0:  # a loader worker: lives on, or exits at once
    if sys.argv[2] == "sleep":
        time.sleep(60)
    os._exit(0)
if sys.argv[2] == "exit":
    os.waitpid(child, 0)
print(child, flush=True)
time.sleep(60)
"""


def _start_holder(lock_file, child_does: str) -> tuple[subprocess.Popen, int]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_file), child_does],
        stdout=subprocess.PIPE,
        text=True,
    )
    return holder, int(holder.stdout.readline())


def test_the_lock_is_free_as_soon_as_its_holder_is_killed_though_its_forked_child_lives(tmp_path):
    lock_file = tmp_path / "store.h5.lock"
    holder, child = _start_holder(lock_file, "sleep")
    try:
        with pytest.raises(ToolkitError, match=f"pid {holder.pid}"):
            StoreLock(lock_file).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        os.kill(child, 0)  # the forked child still runs (raises if it does not)
        StoreLock(lock_file).acquire().release()
    finally:
        holder.kill()
        holder.wait()
        os.kill(child, signal.SIGKILL)


def test_a_forked_child_that_exits_leaves_the_parents_lock_held(tmp_path):
    # The child closes its copy; it must not unlock (that would free the parent's lock too).
    lock_file = tmp_path / "store.h5.lock"
    holder, _ = _start_holder(lock_file, "exit")
    try:
        with pytest.raises(ToolkitError, match=f"pid {holder.pid}"):
            StoreLock(lock_file).acquire()
        assert lock_file.exists()
    finally:
        holder.kill()
        holder.wait()
