"""Per-step metrics: one JSON object per line in `<run>/metrics.jsonl`, and the phase timer.

The JSONL file is the run's source of truth (the status service, plots, `rlvr status`
and tests read it, all through `read_metrics`). Each line is flushed and fsynced as it is
written, so a crash loses at most the step in flight; a torn last line is skipped by the
reader.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager

from rlvr.run.files import atomic_write_text, dumps, read_jsonl

METRICS_FILE = "metrics.jsonl"


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
        kept = [row for row in read_jsonl(self.path) if row.get("step", 0) <= step]
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


def read_metrics(run_dir_or_file: str, since: int | None = None) -> list[dict]:
    """The rows of a run's `metrics.jsonl` (or of that file), with step > `since` when given."""
    path = run_dir_or_file if run_dir_or_file.endswith(".jsonl") else os.path.join(run_dir_or_file, METRICS_FILE)
    rows = read_jsonl(path)
    if since is None:
        return rows
    return [r for r in rows if isinstance(r.get("step"), (int, float)) and r["step"] > since]
