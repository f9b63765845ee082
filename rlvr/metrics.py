"""Per-step metrics: one JSON object per line in `<run>/metrics.jsonl`, and a console line.

The JSONL file is the run's source of truth (the status service, plots and
tests read it). Each line is flushed and fsynced as it is written, so a crash
loses at most the step in flight.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager


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


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; null says "not available"
    return value


class MetricsLogger:
    """`append=True` continues a resumed run's file; rows after `keep_until_step` (steps done
    after the checkpoint it resumed from, which will be done again) are dropped first, so
    every step appears once."""

    def __init__(self, run_dir: str, append: bool = False, keep_until_step: int | None = None, logging_cfg=None):
        os.makedirs(run_dir, exist_ok=True)
        self.sinks = None
        if logging_cfg is not None and logging_cfg.sinks:  # TensorBoard / wandb / MLflow (rlvr.sinks)
            from rlvr.sinks import Sinks

            self.sinks = Sinks(run_dir, logging_cfg)
        self.path = os.path.join(run_dir, "metrics.jsonl")
        if append and keep_until_step is not None and os.path.exists(self.path):
            kept = [line for line in _lines(self.path) if json.loads(line).get("step", 0) <= keep_until_step]
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as f:
                f.writelines(kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        self._file = open(self.path, "a" if append else "w")

    def log(self, metrics: dict) -> None:
        line = json.dumps({k: _clean(v) for k, v in metrics.items()}, sort_keys=False)
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self.sinks is not None:
            self.sinks.log(metrics)

    def close(self) -> None:
        self._file.close()
        if self.sinks is not None:
            self.sinks.close()


def _lines(path: str) -> list[str]:
    """The complete JSON lines of a metrics file (a torn last line from a crash is dropped)."""
    out = []
    with open(path) as f:
        for line in f:
            try:
                json.loads(line)
            except ValueError:
                continue
            out.append(line if line.endswith("\n") else line + "\n")
    return out


def read_metrics(run_dir_or_file: str) -> list[dict]:
    path = run_dir_or_file if run_dir_or_file.endswith(".jsonl") else os.path.join(run_dir_or_file, "metrics.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _short(phase: str) -> str:
    """`generate` -> `gen`; a named eval set's `eval_gsm8k` stays whole."""
    return phase if phase.startswith("eval_") else phase[:3]


def console_line(m: dict) -> str:
    """A compact one-line summary of a step's metrics."""
    parts = [f"step {m['step']:>4}", f"reward {m['reward/mean']:.3f}"]
    if m.get("eval/accuracy") is not None:
        parts.append(f"eval_acc {m['eval/accuracy']:.3f}")
    parts += [f"loss {m['loss']:+.4f}", f"gnorm {m['grad_norm']:.3f}", f"len {m['response_length/mean']:.1f}"]
    phases = " ".join(f"{_short(k.split('/')[1])} {v:.2f}" for k, v in m.items()
                      if k.startswith("timing/") and k != "timing/step" and v is not None)
    parts.append(f"{m['timing/step']:.2f}s ({phases})")
    return " | ".join(parts)


def progress_bar(cfg):
    if not cfg.logging.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.trainer.total_steps, desc="rlvr", unit="step", dynamic_ncols=True)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def phase_bar(cfg, total: int, desc: str, unit: str = "item"):
    """A transient progress bar for a long phase (actor start, an evaluation); a no-op object
    with the same methods when `logging.progress` is off."""
    if not cfg.logging.progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def report_step(progress, metrics: dict, completions, prompts, cfg) -> None:
    line = console_line(metrics)
    if progress is None:
        print(line, flush=True)
        return
    progress.write(line)
    if cfg.logging.print_samples and completions and "eval/accuracy" in metrics:
        c = completions[0]
        progress.write(f"       sample: {prompts[c.prompt_index].text[-40:]!r} -> {c.text!r} (answer {prompts[c.prompt_index].answer})")
    postfix = getattr(progress, "rlvr_postfix", {})  # keep the last eval accuracy on screen
    postfix["reward"] = f"{metrics['reward/mean']:.3f}"
    if "eval/accuracy" in metrics:
        postfix["eval_acc"] = f"{metrics['eval/accuracy']:.3f}"
    progress.rlvr_postfix = postfix
    progress.set_postfix(postfix)
    progress.update(1)
