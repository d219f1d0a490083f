"""A `probe run` in a child process and its own peak resident memory.

The child reports its high-water mark (VmHWM, of the address space exec gave it) as it exits:
the rusage of a child counts the parent's peak from before the exec, which in a benchmark that
built gigabytes of data first would be those gigabytes.
"""

import subprocess
import sys
import time
from pathlib import Path


def peak_of_probe_run(arguments: list[str], folder: Path) -> tuple[int, float]:
    """(peak resident bytes, seconds) of `probe <arguments>`; its report goes in `folder`."""
    report = folder / "peak.txt"
    launcher = (
        "import atexit, sys\n"
        "from pathlib import Path\n"
        "def peak():\n"
        "    status = Path('/proc/self/status').read_text().splitlines()\n"
        f"    Path({str(report)!r}).write_text(next(l for l in status if l.startswith('VmHWM')))\n"
        "atexit.register(peak)\n"
        "from medprobe.probe.cli import main\n"
        "sys.argv[0] = 'probe'\n"
        "main()\n"
    )
    started = time.perf_counter()
    command = [sys.executable, "-c", launcher, *arguments]
    child = subprocess.run(command, stdout=subprocess.DEVNULL, check=False)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"probe run failed with exit code {child.returncode}")
    return int(report.read_text().split()[1]) * 1024, seconds
