"""Weight sync cost in the real loop: each `sync.method` (and colocate placement) on the
default CPU workload, as a share of the step.

    .venv/bin/python -m bench.weight_sync [--steps 30]

Prints, per configuration, the median over steps (after 3 warm-up steps) of
`timing/sync` (gather on the trainer ranks, transfer, load into vLLM),
`timing/step`, and sync as a percentage of the step. The bar (issue 6): at most 5%.
"""

from __future__ import annotations

import argparse
import tempfile

from bench.runs import median_after_warmup, run, save

CONFIGS = {
    "broadcast": ["sync.method=broadcast"],
    "ipc": ["sync.method=ipc"],
    "disk": ["sync.method=disk"],
    "broadcast-colocate": ["sync.method=broadcast", "cluster.placement=colocate"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as out:
        for name in args.configs:
            r = run(f"sync-{name}", CONFIGS[name] + [f"trainer.total_steps={args.steps}", "eval.every=0",
                                                     "eval.num_prompts=0", "sync.verify=off"], out)
            sync, step = median_after_warmup(r["rows"], "timing/sync"), median_after_warmup(r["rows"], "timing/step")
            results[name] = {"sync_s": sync, "step_s": step, "sync_pct": 100 * sync / step,
                             "bytes": r["rows"][-1].get("sync/bytes"), "buckets": r["rows"][-1].get("sync/buckets")}
            print(f"[bench] {name}: {results[name]}", flush=True)
    print(f"{'config':<20} {'sync s':>8} {'step s':>8} {'sync %':>7} {'MB':>6} {'buckets':>7}")
    for name, v in results.items():
        print(f"{name:<20} {v['sync_s']:>8.4f} {v['step_s']:>8.3f} {v['sync_pct']:>6.1f}% "
              f"{(v['bytes'] or 0) / 2**20:>6.2f} {v['buckets'] or 0:>7}")
    print("results:", save("weight_sync", {"steps": args.steps, "results": results}))


if __name__ == "__main__":
    main()
