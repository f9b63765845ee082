"""Every algorithm preset on the tiny task: held-out accuracy gain and cost per step.

    .venv/bin/python -m bench.presets [--steps 40] [--updates-per-step 2] [--presets grpo cispo ...]
                                      [--teacher CHECKPOINT]

Each preset trains the default recipe (`recipes/tiny-cpu.yaml`, the built-in tiny model,
300 held-out prompts at the start and the end) for `--steps` steps with
`trainer.updates_per_step` updates per step: with one update the ratio-based losses
(ppo_clip, cispo, gmpo, sapo) give the same gradient (pi_old = pi), with two or more they
differ. `distill` needs `--teacher` (a trained checkpoint of the same tokenizer, e.g. the
final checkpoint of `make run`); without it, it is skipped. Prints one table row per preset
(start -> final accuracy, gain, median step and train seconds after warm-up, and the
preset's own figures such as `critic/value_loss` or `distill/reverse_kl` first -> last)
and writes `bench/results/presets.json`. Accuracy is deterministic for a seed; the
seconds depend on the machine's load.
"""

from __future__ import annotations

import argparse
import tempfile

from bench.runs import eval_curve, median_after_warmup, run, save

DEFAULT_PRESETS = ["none", "grpo", "dr_grpo", "dapo", "cispo", "gmpo", "sapo", "distill"]
OWN_FIGURES = ("distill/reverse_kl", "critic/value_loss", "critic/explained_variance", "train/kl")


def one(preset: str, args, out: str) -> dict | None:
    overrides = [f"trainer.total_steps={args.steps}", f"trainer.updates_per_step={args.updates_per_step}",
                 f"eval.every={args.steps}", "eval.num_prompts=300", f"run.seed={args.seed}"]
    if preset != "none":
        overrides.append(f"algorithm.preset={preset}")
    if preset == "distill":
        if not args.teacher:
            print("[bench] distill: skipped (no --teacher)", flush=True)
            return None
        overrides.append(f"teacher.path={args.teacher}")
    r = run(f"preset-{preset}", overrides, out)
    rows = r["rows"]
    curve = eval_curve(rows)
    row = {"preset": preset, "curve": curve, "gain": curve[-1][1] - curve[0][1], "wall_s": r["wall_s"],
           "step_s": median_after_warmup(rows, "timing/step"), "train_s": median_after_warmup(rows, "timing/train")}
    for key in OWN_FIGURES:
        values = [x[key] for x in rows[1:] if x.get(key) is not None]
        if values:
            row[key] = (values[0], values[-1])
    own = ", ".join(f"{k} {a:.3g} -> {b:.3g}" for k, (a, b) in ((k, row[k]) for k in OWN_FIGURES if k in row))
    print(f"[bench] {preset:8} {curve[0][1]:.3f} -> {curve[-1][1]:.3f} ({100 * row['gain']:+.1f} points), "
          f"step {row['step_s']:.2f} s, train {row['train_s']:.2f} s{'; ' + own if own else ''}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--updates-per-step", type=int, default=2)
    parser.add_argument("--presets", nargs="*", default=DEFAULT_PRESETS)
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = {"args": vars(args), "runs": []}
    with tempfile.TemporaryDirectory() as out:
        for preset in args.presets:
            row = one(preset, args, out)
            if row is not None:
                results["runs"].append(row)
    print("\n| preset | held-out accuracy | gain (points) | step s | train s |\n|---|---|---|---|---|")
    for r in results["runs"]:
        print(f"| {r['preset']} | {r['curve'][0][1]:.3f} -> {r['curve'][-1][1]:.3f} | {100 * r['gain']:+.1f} | "
              f"{r['step_s']:.2f} | {r['train_s']:.2f} |")
    print(f"\n[bench] wrote {save('presets', results)}")


if __name__ == "__main__":
    main()
