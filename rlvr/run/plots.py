"""PNG charts of a run, from its `metrics.jsonl`: written at the end of `rlvr train`
(`logging.plots`) and on demand with `rlvr plot RUN`.

Each chart is one file in `<run>/plots/`, written atomically (`rlvr.run.files`), so a
reader never sees half a PNG:

    reward.png           train reward mean (and +-1 std band) per step
    accuracy.png         held-out eval accuracy, and the train batch's accuracy
    kl.png               KL to the reference (train/kl) and to the sampling policy (train/approx_kl)
    response_length.png  mean (and max) completion length in tokens
    tools.png            multi-turn runs: the share of episodes with a valid tool call (held-out
                         and train) and the share truncated
    loss.png             `rlvr sft` runs: train and held-out (eval/loss) cross-entropy per token
                         (drawn only for runs that log eval/loss: an RL run's loss is on another scale)
    timings.png          seconds per step, stacked by phase (timing/*), and the step's wall time
                         (eval runs outside it; with async rollouts generate/reward overlap it)

A chart none of whose metrics the run logged is skipped (no eval set: no held-out line;
a run that never got to a step: only what step 0 logged). A torn last line (a crash while
writing) is skipped. Uses matplotlib's non-interactive Agg backend: no display needed.
"""

from __future__ import annotations

import os

from rlvr.run.files import atomic_write
from rlvr.run.metrics import read_metrics

PHASES = ("generate", "tools", "reward", "train", "sync", "verify", "eval", "checkpoint")  # first, in this order
# (file stem, title, y label, [(metric, legend label)], optional band: (mean key, std key))
LINE_CHARTS = [
    ("reward", "reward", "reward", [("reward/mean", "train reward (mean)")], ("reward/mean", "reward/std")),
    ("accuracy", "accuracy", "accuracy", [("eval/accuracy", "held-out (greedy)"), ("accuracy", "train batch")], None),
    ("kl", "KL", "KL", [("train/kl", "to the reference"), ("train/approx_kl", "to the sampling policy")], None),
    ("response_length", "response length", "tokens",
     [("response_length/mean", "mean"), ("response_length/max", "max")], None),
    ("tools", "tool calls (multi-turn)", "share of episodes",
     [("eval/multi_turn/valid_tool_call", "held-out: a valid tool call"),
      ("multi_turn/valid_tool_call", "train: a valid tool call"), ("multi_turn/truncated", "train: truncated")], None),
    ("loss", "loss (SFT)", "cross-entropy per token", [("loss", "train batch"), ("eval/loss", "held-out")], None),
]
REQUIRES = {"loss": "eval/loss"}  # charts drawn only when the run logged this metric


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def _save(fig, path: str) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def plot_run(run_dir: str, out_dir: str | None = None) -> list[str]:
    """Write the run's charts; returns the paths written (raises if the run has no metrics)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}: no metrics.jsonl rows to plot")
    out_dir = out_dir or os.path.join(run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    name = os.path.basename(os.path.normpath(run_dir))
    written = []
    for stem, title, ylabel, keys, band in LINE_CHARTS:
        series = [(label, *_series(rows, key)) for key, label in keys]
        if not any(xs for _, xs, _ in series) or (stem in REQUIRES and not _series(rows, REQUIRES[stem])[0]):
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for label, xs, ys in series:
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
        if band:
            xs, mean = _series(rows, band[0])
            _, std = _series([r for r in rows if band[1] in r], band[1])
            if xs and len(std) == len(mean):
                ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2)
        ax.set(title=f"{name}: {title}", xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = os.path.join(out_dir, f"{stem}.png")
        _save(fig, path)
        plt.close(fig)
        written.append(path)
    steps = [r for r in rows if r.get("step", 0) >= 1 and "timing/step" in r]
    if steps:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        xs, bottom = [r["step"] for r in steps], [0.0] * len(steps)
        logged = {k[len("timing/"):] for r in steps for k in r if k.startswith("timing/")} - {"step"}
        for phase in [p for p in PHASES if p in logged] + sorted(logged - set(PHASES)):
            ys = [float(r.get(f"timing/{phase}") or 0.0) for r in steps]
            if any(ys):
                ax.bar(xs, ys, bottom=bottom, width=1.0, label=phase)
                bottom = [b + y for b, y in zip(bottom, ys)]
        ax.plot(xs, [r["timing/step"] for r in steps], color="black", linewidth=0.8, label="step wall time")
        ax.set(title=f"{name}: seconds per step by phase", xlabel="step", ylabel="seconds")
        ax.legend(fontsize=8)
        path = os.path.join(out_dir, "timings.png")
        _save(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def plot_run_safely(run_dir: str) -> list[str]:
    """`plot_run` at the end of training: a plotting problem is a warning, never a failed run."""
    import sys

    try:
        paths = plot_run(run_dir)
    except Exception as e:  # noqa: BLE001 - the run itself has succeeded
        print(f"[rlvr] warning: could not write plots: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return []
    if paths:
        print(f"[rlvr] plots: {os.path.dirname(paths[0])}/ ({len(paths)} charts)", flush=True)
    return paths
