"""Process and polling helpers shared by the tests that start or kill real processes."""

from __future__ import annotations

import signal
import time


def wait_for(condition, what: str, timeout_s: float = 300.0, poll_s: float = 0.02):
    """Poll `condition()` until it returns something truthy (returned), or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def kill_processes_of(temp_dir: str) -> None:
    """SIGKILL every process whose command line mentions `temp_dir` (one Ray cluster's, found
    by its temp dir; never `ray stop`, which would kill every Ray process on the machine)."""
    import psutil

    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(temp_dir in part for part in proc.info["cmdline"] or []):
                proc.send_signal(signal.SIGKILL)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
