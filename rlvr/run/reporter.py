"""Everything a training step leaves behind, in one call: `RunReporter.step(...)` writes the
metrics row (`metrics.jsonl` and the recipe's sinks), the step's samples (`samples/`),
status.json (step, weight version, latest metrics, timings, reward failure counts) and the
console line, and keeps the run's history for the summary `rlvr train` returns."""

from __future__ import annotations

from rlvr.run.console import Console
from rlvr.run.metrics import MetricsLogger, Timer
from rlvr.run.samples import sample_records, write_samples


class RunReporter:
    """`status`: the run's `RunStatus`; `logging_cfg`: the `logging` section."""

    def __init__(self, run_dir: str, status, logging_cfg, total_steps: int):
        self.run_dir, self.status, self.cfg, self.total_steps = run_dir, status, logging_cfg, total_steps
        self.history: list[dict] = []  # every step's row (not step 0's)
        self.first: dict = {}  # step 0's row: the starting model's evaluation (empty for a resumed run)
        self.failures: dict[str, int] = {}
        self._faults: dict | None = None
        self.logger: MetricsLogger | None = None
        self.console: Console | None = None

    def open(self, resumed_at: int | None = None) -> None:
        """Start the metrics file (a resumed run keeps its rows up to `resumed_at`) and the console."""
        self.logger = MetricsLogger(self.run_dir, append=resumed_at is not None, keep_until_step=resumed_at,
                                    logging_cfg=self.cfg)
        self.console = Console(self.cfg.progress, self.total_steps, self.cfg.print_samples)
        self.console.at(resumed_at or 0)

    def phase(self, name: str) -> None:
        self.status.update(phase=name)

    def timer(self) -> Timer:
        """A step's timer; each phase it times shows in status.json as it starts."""
        return Timer(on_phase=self.phase)

    def start(self, row: dict) -> None:
        """The step-0 row (the first evaluation, prompts skipped for length)."""
        self.logger.log(row)
        self.first = row
        if row.get("eval/accuracy") is not None:
            print(f"[rlvr] step 0 eval/accuracy {row['eval/accuracy']:.3f}", flush=True)

    def step(self, metrics: dict, batch=None, advantages: list[float] | None = None, places=None) -> None:
        """A finished step: `metrics` is its whole row (with `step`, `weight_version` and the
        `faults/*` counts), `batch` its rollouts (`rlvr.loop.batches.Batch`), `advantages` per
        completion; `places()` gives where the actors run, asked again when an actor was replaced."""
        step = metrics["step"]
        faults = {k: v for k, v in metrics.items() if k.startswith("faults/")}
        if places is not None and self._faults is not None and faults != self._faults:
            self.status.update(placement=places())
        self._faults = faults
        self.logger.log(metrics)
        if batch is not None and self.cfg.samples_per_step:
            write_samples(self.run_dir, step, sample_records(step, batch.prompts, batch.completions, batch.rewards,
                                                             advantages, self.cfg.samples_per_step))
        for key in (k for r in (batch.rewards if batch else []) for k in r.failures):
            self.failures[key] = self.failures.get(key, 0) + 1
        self.status.update(step=step, weight_version=metrics.get("weight_version"), latest_metrics=metrics,
                           reward_failures=self.failures,
                           last_step_timings={k: v for k, v in metrics.items() if k.startswith("timing/")})
        self.history.append(metrics)
        self.console.step(metrics, _sample_line(batch))

    def checkpoints(self, names: list[str]) -> None:
        self.status.update(checkpoints=names)

    def rewind(self, step: int) -> None:
        """Back to `step` (the trainer ranks restarted from its checkpoint): later rows are dropped."""
        self.logger.rewind(step)
        self.history = [m for m in self.history if m["step"] <= step]
        self.console.at(step)
        self.status.update(step=step)

    def close(self) -> None:
        if self.console is not None:
            self.console.close()
        if self.logger is not None:
            self.logger.close()


def _sample_line(batch) -> str | None:
    if batch is None or not batch.completions:
        return None
    c = batch.completions[0]
    p = batch.prompts[c.prompt_index]
    return f"{p.text[-40:]!r} -> {c.text!r} (answer {p.answer})"
