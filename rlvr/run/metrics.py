"""Per-step metrics: one JSON object per line in `<run>/metrics.jsonl`, and the phase timer.

The JSONL file is the run's source of truth (the status service, plots, `rlvr status`
and tests read it, all through `read_metrics`). Each line is flushed and fsynced as it is
written, so a crash loses at most the step in flight; a torn last line is skipped by the
reader.

`read_metrics(run, cache=MetricsCache())` reads incrementally: the cache keeps, per file,
the rows parsed so far and the byte offset they end at, so a poll parses only the bytes
appended since the last one. A file that shrank or was replaced (another inode, other first
bytes, the same size with another mtime: `MetricsLogger.rewind`, a restarted run) is read
again from the start. Memory is bounded: at most `max_rows` rows per file (older rows are
thinned two to one, the newer half kept whole) and `max_files` files (least recently read
dropped); a line over `MAX_LINE_BYTES` is skipped.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager

from rlvr.run.files import atomic_write_text, dumps, open_regular, parse_jsonl_line

METRICS_FILE = "metrics.jsonl"
MAX_LINE_BYTES = 1 << 20  # a metrics row is ~1 KB; a longer line is junk, skipped unparsed
_CHUNK = 1 << 20
_HEAD = 256  # first bytes remembered: an in-place rewrite shows as different first bytes


class Timer:
    """Collects `timing/<phase>` seconds: `with timer("generate"): ...`; `on_phase(name)`
    is called as each phase starts (the driver reports it in the run's status)."""

    def __init__(self, on_phase=None):
        self.times: dict[str, float] = {}
        self.on_phase = on_phase

    @contextmanager
    def __call__(self, phase: str):
        if self.on_phase is not None:
            self.on_phase(phase)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[f"timing/{phase}"] = self.times.get(f"timing/{phase}", 0.0) + time.perf_counter() - start


class MetricsLogger:
    """Appends one row per step to `metrics.jsonl` (and to the recipe's sinks, `rlvr.run.sinks`).

    `append=True` continues a resumed run's file; `rewind(step)` drops the rows after `step`
    (steps done after the checkpoint a run goes back to, which will be done again), so every
    step appears once."""

    def __init__(self, run_dir: str, append: bool = False, keep_until_step: int | None = None, logging_cfg=None):
        os.makedirs(run_dir, exist_ok=True)
        self.sinks = None
        if logging_cfg is not None and logging_cfg.sinks:  # TensorBoard / wandb / MLflow
            from rlvr.run.sinks import Sinks

            self.sinks = Sinks(run_dir, logging_cfg)
        self.path = os.path.join(run_dir, METRICS_FILE)
        if not append:
            atomic_write_text(self.path, "")
        elif keep_until_step is not None:
            self._keep_until(keep_until_step)
        self._file = open(self.path, "a")

    def _keep_until(self, step: int) -> None:
        kept = [row for row in read_metrics(self.path) if row.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in kept))

    def rewind(self, step: int) -> None:
        """Drop the rows after `step` (a run going back to its checkpoint of that step)."""
        self._file.close()
        self._keep_until(step)
        self._file = open(self.path, "a")

    def log(self, metrics: dict) -> None:
        self._file.write(dumps(metrics) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self.sinks is not None:
            self.sinks.log(metrics)

    def close(self) -> None:
        self._file.close()
        if self.sinks is not None:
            self.sinks.close()


class _Tail:
    """What has been read of one metrics file: rows, the offset where the next line starts."""

    def __init__(self, max_rows: int | None):
        self.max_rows = max_rows
        self.lock = threading.Lock()
        self.reset(None)

    def reset(self, ident) -> None:
        self.ident, self.size, self.mtime = ident, None, None
        self.offset, self.head, self.skipping = 0, b"", False  # skipping: inside an over-long line
        self.rows: list[dict] = []
        self.thinned_before = None  # rows up to this step are thinned (every other one dropped)

    def _replaced(self, fd: int, st) -> bool:
        if (st.st_dev, st.st_ino) != self.ident or st.st_size < self.offset:
            return True
        if st.st_size == self.size and st.st_mtime_ns != self.mtime:
            return True
        return os.pread(fd, len(self.head), 0) != self.head

    def refresh(self, fd: int, st) -> dict | None:
        """Parse the bytes appended since the last call; the unterminated last line's row, if
        it parses (read again next time, when it may be longer)."""
        if self._replaced(fd, st):
            self.reset((st.st_dev, st.st_ino))
        self.size, self.mtime = st.st_size, st.st_mtime_ns
        pending = b""
        while self.offset + len(pending) < st.st_size:
            chunk = os.pread(fd, min(_CHUNK, st.st_size - self.offset - len(pending)), self.offset + len(pending))
            if not chunk:
                break
            pending = self._consume(pending + chunk)
        if len(self.head) < _HEAD:
            self.head = os.pread(fd, min(_HEAD, self.offset), 0)
        return None if self.skipping else parse_jsonl_line(pending)

    def _consume(self, data: bytes) -> bytes:
        """Parse the complete lines of `data` (which starts at `offset`); the rest is returned."""
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) <= MAX_LINE_BYTES and not self.skipping:
                return data
            self.offset, self.skipping = self.offset + len(data), True
            return b""
        lines = data[:end].split(b"\n")
        if self.skipping:
            lines, self.skipping = lines[1:], False
        self.rows.extend(row for line in lines if len(line) <= MAX_LINE_BYTES
                         and (row := parse_jsonl_line(line)) is not None)
        self._thin()
        self.offset += end + 1
        return data[end + 1:]

    def _thin(self) -> None:
        """At most `max_rows` rows: of the older ones (all but the newest max_rows/2) keep one in
        two, the one with more keys (an eval step), as often as needed."""
        while self.max_rows is not None and len(self.rows) > self.max_rows:
            cut = len(self.rows) - self.max_rows // 2
            old = self.rows[:cut]
            self.rows = [max(old[i:i + 2], key=len) for i in range(0, cut, 2)] + self.rows[cut:]
            self.thinned_before = old[-1].get("step")


class MetricsCache:
    """Incremental reads of metrics files for a poller (the status service): see the module doc."""

    def __init__(self, max_rows: int = 10_000, max_files: int = 64):
        self.max_rows, self.max_files = max_rows, max_files
        self._tails: OrderedDict[str, _Tail] = OrderedDict()
        self._lock = threading.Lock()

    def tail(self, path: str) -> _Tail:
        with self._lock:
            tail = self._tails.pop(path, None) or _Tail(self.max_rows)
            self._tails[path] = tail
            while len(self._tails) > self.max_files:
                self._tails.popitem(last=False)
            return tail

    def forget(self, path: str) -> None:
        with self._lock:
            self._tails.pop(path, None)


def metrics_path(run_dir_or_file: str) -> str:
    return run_dir_or_file if run_dir_or_file.endswith(".jsonl") else os.path.join(run_dir_or_file, METRICS_FILE)


def read_metrics(run_dir_or_file: str, since: int | None = None, cache: MetricsCache | None = None) -> list[dict]:
    """The rows of a run's `metrics.jsonl` (or of that file), with step > `since` when given.
    With `cache`, only the bytes appended since the last call are read (rows may be thinned:
    `metrics_thinned_before`). Not a plain file (a symlink, a FIFO): no rows."""
    path = metrics_path(run_dir_or_file)
    opened = open_regular(path)
    if opened is None:
        if cache is not None:
            cache.forget(path)
        return []
    fd, st = opened
    tail = _Tail(None) if cache is None else cache.tail(path)
    try:
        with tail.lock:
            last = tail.refresh(fd, st)
            rows = tail.rows + ([last] if last is not None else [])
    finally:
        os.close(fd)
    if since is None:
        return rows
    return [r for r in rows if isinstance(r.get("step"), (int, float)) and r["step"] > since]


def metrics_thinned_before(run_dir_or_file: str, cache: MetricsCache) -> int | float | None:
    """The step up to which `cache` keeps only some of the file's rows (None: all kept)."""
    with cache._lock:
        tail = cache._tails.get(metrics_path(run_dir_or_file))
    return None if tail is None else tail.thinned_before
