"""Where the actors' own output goes: by default into the run folder, not the console.

vLLM, Ray, transformers and torch print dozens of lines per engine or trainer start
(warnings about chunked prefill, Triton, tcmalloc, NUMA, deprecations, weight-loading bars).
With `logging.verbose: false` (the default) the driver calls `send_actor_output_to(<run>/logs)`
before it starts any actor; every actor class then goes through `actor_class`, whose
`__init__` first points the process's stdout and stderr (file descriptors 1 and 2, so C++
and subprocess output too) at `<run>/logs/<role>-<pid>.log`, and Ray is told not to copy
worker output to the driver. `--verbose` (`logging.verbose: true`) keeps Ray's default:
every line on the console, prefixed with the actor. A node that cannot write the folder
(not shared storage) leaves its actors' output in Ray's own logs.
"""

from __future__ import annotations

import os
import sys

_LOG_DIR: str | None = None  # set in the driver, read when an actor class is made


def send_actor_output_to(log_dir: str | None) -> None:
    """Actors made from now on write their output under `log_dir` (None: Ray's default)."""
    global _LOG_DIR
    _LOG_DIR = os.path.abspath(log_dir) if log_dir else None


def actor_class(cls, role: str):
    """`cls`, or (when a log folder is set) a subclass that first sends the process's output to
    `<log_dir>/<role>-<pid>.log` (the folder is fixed now, in the driver, not in the actor)."""
    log_dir = _LOG_DIR
    if log_dir is None:
        return cls

    def __init__(self, *args, **kwargs):
        redirect_output(log_dir, role)
        cls.__init__(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__qualname__": cls.__qualname__,
                                       "__module__": cls.__module__})


def redirect_output(log_dir: str, role: str) -> str | None:
    """Point fds 1 and 2 of this process at `<log_dir>/<role>-<pid>.log`; the path, or None when
    the folder cannot be written (the output then stays where it was)."""
    path = os.path.join(log_dir, f"{role.replace(' ', '_')}-{os.getpid()}.log")
    try:
        os.makedirs(log_dir, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except OSError:
        return None
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return path
