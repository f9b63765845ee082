"""`trainer.compile`: the trainer step eager, with compiled norm/MLP blocks, and with compiled
decoder layers, on the CPU benchmark model, plus what compiling costs.

    python -m bench.compile                      # both settings, 6 steps each
    python -m bench.compile --setting varied --steps 10

One in-process trainer rank (FSDP2 over gloo, world 1, 2 threads, packed shared-prompt rows,
fused log-probs, PPO-clip token mean, AdamW) on `bench.compare_trl`'s model (Qwen3
architecture, 38M parameters, 12 layers, random init) and its step: 8 prompts x 8 completions,
micro-batch 16. The three modes take turns on the same samples every step, in one process
(the machine is shared: a slow minute hits every mode alike); a mode's compiled forwards are
bound only while it runs. The first step (compiling) is left out of the medians; its time is
printed, and `compile_s` is torch's own compile timer after the run (all modes together).

Settings:
- `fixed`: every completion 64 tokens (`bench.compare_trl`'s work, EOS ignored): one shape.
- `varied`: completions of 8..64 tokens, new ones every step: a new row length every micro-batch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

MODES = ("off", "blocks", "layers")
SETTINGS = {"fixed": (64, 64), "varied": (8, 64)}  # completion lengths (low, high)


def _worker(spec: dict):
    from rlvr.cluster.env import free_port
    from rlvr.config import AlgorithmConfig, TrainerConfig
    from rlvr.trainer.worker import TrainerWorker

    cfg = TrainerConfig(num_workers=1, num_threads=2, micro_batch_size=spec["micro_batch_size"], total_steps=1000,
                        lr=spec["lr"])
    worker = TrainerWorker(0, 1, cfg, AlgorithmConfig(clip_low=spec["epsilon"], clip_high=spec["epsilon"]), seed=0)
    worker.setup(("127.0.0.1", free_port()), spec["model_dir"])
    return worker


def _forwards(model, mode: str) -> dict:
    """{module: its compiled forward} for `mode`; the model is left eager."""
    from rlvr.trainer.compile import compile_modules

    if mode == "off":
        return {}
    compile_modules(model, mode)
    table = {m: m.__dict__["forward"] for m in model.modules() if "forward" in m.__dict__}
    for m in table:
        del m.__dict__["forward"]
    return table


def _prompts(spec: dict) -> tuple[list[list[int]], int]:
    """The step's prompts, tokenized (read once), and the vocabulary size."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    with open(spec["prompts_path"]) as f:
        rows = [json.loads(line) for line in f][:spec["prompts_per_step"]]
    return [tok(row["prompt"])["input_ids"] for row in rows], len(tok)


def _samples(prompts: list[list[int]], vocab: int, group: int, setting: str, rng: random.Random):
    """`group` random completions per prompt, of the setting's lengths (new ones every call)."""
    from rlvr.types import TrainSample

    low, high = SETTINGS[setting]
    out = []
    for prompt in prompts:
        for _ in range(group):
            n = rng.randint(low, high)
            out.append(TrainSample(prompt, [rng.randrange(3, vocab) for _ in range(n)], rng.uniform(-1, 1),
                                   [-1.0] * n))
    return out


def run(setting: str, steps: int) -> dict:
    import torch.distributed as dist

    from bench.compare_trl import CACHE
    from bench.workload import Work, build
    from rlvr.trainer.compile import compile_seconds

    spec = build(os.path.join(CACHE, "work"), Work())
    worker = _worker(spec)
    tables = {mode: _forwards(worker.hf_model, mode) for mode in MODES}
    prompts, vocab = _prompts(spec)
    rng = random.Random(0)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for step in range(steps + 1):
        samples = _samples(prompts, vocab, spec["group_size"], setting, rng)
        tokens = float(sum(len(s.completion_ids) for s in samples))
        num_micro = -(-len(samples) // spec["micro_batch_size"])
        for mode in MODES:
            for module, forward in tables[mode].items():
                module.forward = forward
            t = time.perf_counter()
            worker.train_step(samples, tokens, num_micro)
            times[mode].append(time.perf_counter() - t)
            for module in tables[mode]:
                del module.__dict__["forward"]
        print(f"  step {step}: " + ", ".join(f"{m} {times[m][-1]:.2f} s" for m in MODES), flush=True)
    dist.destroy_process_group()
    return {"setting": setting, "times": times, "compile_s": compile_seconds()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--steps", type=int, default=6, help="timed steps per mode (after the first, compiling one)")
    args = ap.parse_args(argv)
    for setting in args.setting:
        print(f"{setting}:", flush=True)
        r = run(setting, args.steps)
        base = statistics.median(r["times"]["off"][1:])
        for mode in MODES:
            t = r["times"][mode]
            med = statistics.median(t[1:])
            print(f"  {mode:6s} median {med:5.2f} s ({med / base:4.2f}x off), first step {t[0]:5.2f} s", flush=True)
        print(f"  torch compile timers: {r['compile_s']:.1f} s in all" if r["compile_s"] is not None else "", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
