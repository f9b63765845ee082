"""What a run prints: a progress bar over the steps with one metrics line per step, and
transient bars for long phases (actor start, an evaluation). With `logging.progress: false`
it prints the metrics lines only."""

from __future__ import annotations


def _short(phase: str) -> str:
    """`generate` -> `gen`; a named eval set's `eval_gsm8k` stays whole."""
    return phase if phase.startswith("eval_") else phase[:3]


def console_line(m: dict) -> str:
    """A compact one-line summary of a step's metrics (an RL step's or an `rlvr sft` step's: what
    the row holds of reward, held-out accuracy / loss, loss, grad norm, length)."""
    parts = [f"step {m['step']:>4}"]
    if m.get("reward/mean") is not None:
        parts.append(f"reward {m['reward/mean']:.3f}")
    if m.get("eval/accuracy") is not None:
        parts.append(f"eval_acc {m['eval/accuracy']:.3f}")
    if m.get("eval/loss") is not None:
        parts.append(f"eval_loss {m['eval/loss']:.4f}")
    parts += [f"loss {m['loss']:+.4f}", f"gnorm {m['grad_norm']:.3f}"]
    if m.get("response_length/mean") is not None:
        parts.append(f"len {m['response_length/mean']:.1f}")
    phases = " ".join(f"{_short(k.split('/')[1])} {v:.2f}" for k, v in m.items()
                      if k.startswith("timing/") and k != "timing/step" and v is not None)
    parts.append(f"{m['timing/step']:.2f}s ({phases})")
    return " | ".join(parts)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def phase_bar(enabled: bool, total: int, desc: str, unit: str = "item"):
    """A transient progress bar for a long phase; a no-op object with the same methods when
    `enabled` (`logging.progress`) is off."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


class Console:
    """The step bar and the per-step lines. `print_samples`: show one completion at each eval."""

    def __init__(self, progress: bool, total_steps: int, print_samples: int = 1):
        self.print_samples = print_samples
        self.bar = None
        self.postfix: dict = {}
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, desc="rlvr", unit="step", dynamic_ncols=True)

    def at(self, step: int) -> None:
        """Put the bar at `step` (a resumed run starts there)."""
        if self.bar is not None:
            self.bar.n = step
            self.bar.refresh()

    def step(self, metrics: dict, sample: str | None = None) -> None:
        line = console_line(metrics)
        if self.bar is None:
            print(line, flush=True)
            return
        self.bar.write(line)
        if self.print_samples and sample and "eval/accuracy" in metrics:
            self.bar.write(f"       sample: {sample}")
        if metrics.get("reward/mean") is not None:
            self.postfix["reward"] = f"{metrics['reward/mean']:.3f}"  # the last eval figure stays on screen
        if "eval/accuracy" in metrics:
            self.postfix["eval_acc"] = f"{metrics['eval/accuracy']:.3f}"
        if "eval/loss" in metrics:
            self.postfix["eval_loss"] = f"{metrics['eval/loss']:.4f}"
        self.bar.set_postfix(self.postfix)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
