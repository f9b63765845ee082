"""Where a multi-turn step's time goes: the episodes of `recipes/tiny-tools-cpu.yaml`'s batch
(32 prompts x 8 episodes, the `calc` tool) through a real vLLM engine and tool worker, split
per turn into generation and the tool calls (with their observations) that follow it.

    .venv/bin/python -m bench.multi_turn [--batches 5]

Prints, per turn, the median over batches (after one warm-up batch) of the seconds spent
generating and in tools, and the live episodes; then the trainer's share, from a short run
of the recipe (`timing/train` and `timing/step`, median after 3 warm-up steps).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import contextmanager

from bench.runs import REPO, median_after_warmup, run, save

TOOLS_RECIPE = os.path.join(REPO, "recipes", "tiny-tools-cpu.yaml")


class TurnTimer:
    """A `Timer` stand-in that keeps every call's seconds in order (call k of a phase = turn k)."""

    def __init__(self):
        self.calls: dict[str, list[float]] = {}

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.calls.setdefault(phase, []).append(time.perf_counter() - t0)


def episodes_per_turn(batches: int) -> list[dict]:
    import ray
    from transformers import AutoTokenizer

    from rlvr.config import load_recipe
    from rlvr.data.prompts import render_prompts, template_kwargs
    from rlvr.data.rows import tool_arithmetic_rows
    from rlvr.loop.train import model_folder, multi_turn_parts
    from rlvr.rollout.episodes import EpisodeRunner
    from rlvr.rollout.group import RolloutGroup
    from rlvr.tools.group import ToolGroup
    from rlvr.types import SamplingSpec

    cfg = load_recipe(TOOLS_RECIPE, [])
    model = model_folder(cfg.model, cfg.data)
    tokenizer = AutoTokenizer.from_pretrained(model)
    schemas, make_env = multi_turn_parts(cfg.rollout.multi_turn)
    ray.init(address="local", num_cpus=4, include_dashboard=False)
    rollouts = RolloutGroup(cfg.rollout, model, seed=0, dtype="float32")
    tools = ToolGroup(cfg.rollout.multi_turn)
    try:
        runner = EpisodeRunner(cfg.rollout.multi_turn, make_env, tools, tokenizer, template_kwargs(cfg.data, schemas),
                               1024)
        rows = tool_arithmetic_rows(cfg.data.tool_arithmetic, "train")
        out = []
        for b in range(batches + 1):
            prompts = render_prompts(rows[b * 32:(b + 1) * 32], tokenizer, cfg.data, schemas)
            timer = TurnTimer()
            spec = SamplingSpec(n=8, max_tokens=cfg.rollout.max_tokens, temperature=1.0, seed=b)
            completions = runner.run(rollouts, prompts, spec, 1, timer)
            live = [sum(c.episode["turns"] > k for c in completions) for k in range(len(timer.calls["generate"]))]
            if b:  # the first batch warms the engine up
                out.append({"generate": timer.calls["generate"], "tools": timer.calls["tools"], "live": live})
        return out
    finally:
        tools.stop()
        rollouts.stop()
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps of the short run for the trainer's share")
    args = parser.parse_args()
    batches = episodes_per_turn(args.batches)
    turns = max(len(b["generate"]) for b in batches)
    per_turn = []
    print(f"{'turn':>4} {'live episodes':>13} {'generate s':>10} {'tools s':>8}")
    for k in range(turns):
        got = [b for b in batches if len(b["generate"]) > k]
        row = {"turn": k, "live": statistics.median(b["live"][k] for b in got),
               "generate_s": statistics.median(b["generate"][k] for b in got),
               "tools_s": statistics.median(b["tools"][k] for b in got)}
        per_turn.append(row)
        print(f"{k:>4} {row['live']:>13} {row['generate_s']:>10.3f} {row['tools_s']:>8.3f}")

    with tempfile.TemporaryDirectory() as out:
        r = run("multi-turn", [f"trainer.total_steps={args.steps}", "eval.num_prompts=0"], out, recipe=TOOLS_RECIPE)
    step = {k: median_after_warmup(r["rows"], f"timing/{k}") for k in ("step", "generate", "tools", "reward", "train",
                                                                          "sync")}
    print("whole step (median): " + ", ".join(f"{k} {v:.3f} s" for k, v in step.items()))
    print(f"[bench] wrote {save('multi_turn', {'per_turn': per_turn, 'step': step})}")


if __name__ == "__main__":
    main()
