"""One-step-off-policy rollouts: `rollout.max_staleness` 0 vs 1 on one engine and one
trainer rank, one core each, where generation and training take comparable time.

    .venv/bin/python -m bench.async_rollouts [--steps 60] [--seed 0]

Prints steps/hour (from the median step time after warm-up, and from the loop's
wall time), the phase medians, and the held-out accuracy curve of both runs (the
bar, issue 6: at least 1.3x steps/hour with a learning curve no worse).
"""

from __future__ import annotations

import argparse
import tempfile

from bench.runs import eval_curve, median_after_warmup, run, save

COMMON = ["trainer.num_workers=1", "trainer.num_threads=1", "trainer.cpus_per_worker=1",
          "rollout.num_engines=1", "rollout.num_threads=1", "rollout.cpus_per_engine=1",
          "reward.cpus_per_worker=0.5", "sync.verify=off"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=20)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as out:
        for staleness in (0, 1):
            r = run(f"async-{staleness}", COMMON + [f"rollout.max_staleness={staleness}", f"run.seed={args.seed}",
                                                    f"trainer.total_steps={args.steps}", f"eval.every={args.eval_every}",
                                                    "eval.num_prompts=300"], out)
            rows = [row for row in r["rows"] if row["step"] > 0]
            step = median_after_warmup(rows, "timing/step")
            loop_s = sum(row["timing/step"] for row in rows)
            results[staleness] = {
                "step_s": step, "steps_per_hour": 3600 / step, "loop_steps_per_hour": 3600 * len(rows) / loop_s,
                "generate_s": median_after_warmup(rows, "timing/generate"),
                "train_s": median_after_warmup(rows, "timing/train"),
                "sync_s": median_after_warmup(rows, "timing/sync"),
                "wait_rollout_s": median_after_warmup(rows, "timing/wait_rollout"),
                "staleness": median_after_warmup(rows, "rollout/staleness"),
                "eval": eval_curve(r["rows"]),
            }
    for s, v in results.items():
        print(f"max_staleness={s}: step {v['step_s']:.3f} s median -> {v['steps_per_hour']:.0f} steps/h "
              f"(loop: {v['loop_steps_per_hour']:.0f}); generate {v['generate_s']:.3f}, train {v['train_s']:.3f}, "
              f"sync {v['sync_s']:.3f}, waiting for rollouts {v['wait_rollout_s']:.3f}; staleness {v['staleness']:.2f}")
        print(f"  eval/accuracy by step: {v['eval']}")
    speedup = results[1]["steps_per_hour"] / results[0]["steps_per_hour"]
    print(f"speed-up (median step): {speedup:.2f}x; loop: "
          f"{results[1]['loop_steps_per_hour'] / results[0]['loop_steps_per_hour']:.2f}x")
    print("results:", save("async_rollouts", {"steps": args.steps, "seed": args.seed, "results": results,
                                              "speedup": speedup}))


if __name__ == "__main__":
    main()
