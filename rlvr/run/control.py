"""Control requests: how the status API (or SIGTERM, or `rlvr serve` in another process)
asks a training run to pause, resume, checkpoint now or stop.

Requests are files, not RPCs: `control/<time_ns>-<action>.json` in the run folder. A
request survives a driver that is busy in a long generate call, and exactly one consumer
gets each one (it is claimed by unlinking the file). Order is the time_ns in the name.
Requests older than the driver process (left by a driver that was killed before reading
them) are dropped with a note, so a new run in the same folder does not obey them.
"""

from __future__ import annotations

import os
import re
import threading
import time

from rlvr.run.files import atomic_write_text, dumps

ACTIONS = ("pause", "resume", "checkpoint", "stop")
CONTROL_DIR = "control"
_CONTROL_FILE = re.compile(r"^(\d+)-(" + "|".join(ACTIONS) + r")\.json$")


def request_control(run_dir: str, action: str) -> dict:
    """Ask the run to `pause`, `resume`, `checkpoint` or `stop`: writes control/<time_ns>-<action>.json."""
    if action not in ACTIONS:
        raise ValueError(f"unknown control action {action!r}; expected one of {ACTIONS}")
    stamp = _next_stamp()
    request = {"action": action, "requested_at": stamp / 1e9, "id": f"{stamp}-{action}"}
    atomic_write_text(os.path.join(run_dir, CONTROL_DIR, f"{stamp}-{action}.json"), dumps(request) + "\n")
    return request


_stamp_lock = threading.Lock()
_last_stamp = 0


def _next_stamp() -> int:
    """time.time_ns(), strictly increasing within this process (two requests never share a name)."""
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        return _last_stamp


def process_start_ns() -> int:
    """When this process started (ns since the epoch)."""
    import psutil

    return int(psutil.Process().create_time() * 1e9)


class ControlInbox:
    """The driver's end of control requests: `take()` returns new actions once each.
    Requests stamped before `since_ns` (left in the folder by an earlier driver of the same
    run that died before reading them) are dropped with a note, not obeyed."""

    def __init__(self, run_dir: str, since_ns: int | None = None):
        self.dir = os.path.join(run_dir, CONTROL_DIR)
        self.since_ns = since_ns

    def take(self) -> list[str]:
        """Pending actions in arrival order; their files are deleted. Other files are left alone."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        found = sorted((int(m.group(1)), name, m.group(2))
                       for name in names if (m := _CONTROL_FILE.match(name)))
        actions = []
        for stamp, name, action in found:
            try:
                os.unlink(os.path.join(self.dir, name))  # claiming by unlink: one consumer per request
            except FileNotFoundError:
                continue
            if self.since_ns is not None and stamp < self.since_ns:
                print(f"[rlvr] ignoring control request {name}: made before this driver started", flush=True)
                continue
            actions.append(action)
        return actions
