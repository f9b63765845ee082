"""Writing and reading run files safely: the one atomic write, and the one JSON-lines reader.

Every file rlvr writes for others to read (status.json, control requests, samples, metrics
rewrites, plots, sync buckets, checkpoints, eval outputs) goes through `atomic_write` (a
file) or `atomic_folder_write` (a folder): the content is written under a temporary name
beside its target, fsynced, renamed into place and the parent folder fsynced, so a reader
sees the old version or the new one, never half of one, and a crash loses at most the
write in flight.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import threading
from typing import Callable


def fsync_dir(path: str) -> None:
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """`write(tmp)` writes the content to a temporary path beside `path`; it is then fsynced
    and renamed to `path` (replacing it). On any error the temporary file is removed."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(parent)


def atomic_write_text(path: str, text: str) -> None:
    """`text` (UTF-8) to `path`, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def _fsync_tree(root: str) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(dirpath)


def replace_folder(tmp: str, path: str) -> None:
    """Fsync the complete folder `tmp` and rename it to `path`; an older `path` is moved aside
    first and removed after, so a reader sees the old folder or the new one."""
    _fsync_tree(tmp)
    if os.path.exists(path):
        old = f"{path}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_folder_write(path: str, write: Callable[[str], None]) -> str:
    """Call `write(tmp_dir)`, then fsync and rename tmp_dir to `path` (replacing it)."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        write(tmp)
        replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def build_once(path: str, marker: str, build: Callable[[str], None]) -> str:
    """`path`, made by `build(path)` unless `path/marker` already exists (`build` writes the marker
    last, so a half-built folder is built again). An fcntl lock on `path.lock` makes concurrent
    builders (two tests, two Ray actors) wait for the first one, then find its result."""
    import fcntl

    done = os.path.join(path, marker)
    if os.path.isfile(done):
        return path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait, then re-check
        try:
            if not os.path.isfile(done):
                build(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def jsonable(value):
    """`value` with non-finite floats turned into None (JSON has no NaN), recursively.

    >>> jsonable({"a": float("nan"), "b": [1.5, float("inf")], "c": "x"})
    {'a': None, 'b': [1.5, None], 'c': 'x'}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def dumps(obj) -> str:
    """One line of strict JSON (non-finite floats as null)."""
    return json.dumps(jsonable(obj), allow_nan=False, ensure_ascii=False)


def regular_file(path: str, max_bytes: int | None = None) -> bool:
    """A plain file to read: not a symlink (that could point anywhere), a FIFO (that would block)
    or a device, and not over `max_bytes`. Run folders are not trusted."""
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(st.st_mode) and (max_bytes is None or st.st_size <= max_bytes)


def open_regular(path: str) -> tuple[int, os.stat_result] | None:
    """An open read-only descriptor and its stat for a plain file, else None: a symlink is not
    followed, and a FIFO is opened non-blocking and refused by its fstat, so nothing blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except (OSError, ValueError):
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def parse_jsonl_line(line: bytes | str) -> dict | None:
    """One JSON-lines line as an object with non-finite floats as None, or None (a torn line,
    a non-object, junk nested too deeply to parse).

    >>> parse_jsonl_line(b'{"step": 3, "x": NaN}'), parse_jsonl_line("[2]"), parse_jsonl_line('{"lo')
    ({'step': 3, 'x': None}, None, None)
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    try:
        row = json.loads(line)
        return jsonable(row) if isinstance(row, dict) else None
    except (ValueError, RecursionError):
        return None


def read_jsonl(path: str, max_bytes: int | None = None) -> list[dict]:
    """The objects of a JSON-lines file, in order. Lines that do not parse (a torn last line
    after a crash) or hold something other than an object are skipped; a missing file, or one
    that is not a plain file or is over `max_bytes`, is empty.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    ...     _ = f.write('{"step": 1}\\n[2]\\n{"step": 3, "x": NaN}\\n{"step": 4, "lo')
    >>> read_jsonl(f.name)
    [{'step': 1}, {'step': 3, 'x': None}]
    """
    opened = open_regular(path)
    if opened is None:
        return []
    fd, st = opened
    if max_bytes is not None and st.st_size > max_bytes:
        os.close(fd)
        return []
    with open(fd, "rb") as f:
        lines = f.read().split(b"\n")
    return [row for row in map(parse_jsonl_line, lines) if row is not None]
