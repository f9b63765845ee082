"""Does the rollout engine slow the trainer down? The trainer step of `bench.compare_trl`'s
work, timed through the real trainer actor in four situations:

    PYTHONPATH=. python -m bench.interference [--steps 5] [--engine-threads 2]

* alone:        no engine process exists
* idle engine:  a vLLM engine actor exists and has generated once, then sits idle
* after gen:    each step right after a generate call (as in a run: generate, train)
* after sync:   each step right after a generate call and a weight push (the run's order
                is generate, train, sync; here sync, generate, train, so the trainer
                also carries the push's buffers)

Same samples every step (8 prompts x 8 completions x 64 tokens, micro-batch 16), the
recommended 2-core configuration (one trainer rank with 2 threads, compiled layers; the
engine compiled, 2 threads). Prints the median `train_step` seconds of each situation,
measured inside the actor, and the generate seconds. Noisy on a shared machine: run it
on a quiet one and compare the rows of one invocation.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from bench import runs
from bench.workload import Work, build

CACHE = os.path.join(runs.REPO, ".cache", "bench", "compare_trl")


def samples(work: Work, prompt_len: int = 38, seed: int = 0) -> list:
    from rlvr.types import TrainSample

    rng = random.Random(seed)
    out = []
    for _ in range(work.prompts_per_step):
        prompt = [rng.randrange(3, 300) for _ in range(prompt_len)]
        for _ in range(work.group_size):
            completion = [rng.randrange(3, 300) for _ in range(work.max_new_tokens)]
            out.append(TrainSample(prompt, completion, rng.uniform(-1, 1), [-5.0] * len(completion)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per situation (after one warm-up)")
    ap.add_argument("--engine-threads", type=int, default=2)
    ap.add_argument("--alone-only", action="store_true", help="only the first situation (no engine)")
    args = ap.parse_args()

    import ray

    from rlvr.config import AlgorithmConfig, RolloutConfig, TrainerConfig
    from rlvr.rollout.group import RolloutGroup
    from rlvr.trainer.group import TrainerGroup
    from rlvr.types import SamplingSpec

    work = Work()
    spec = build(os.path.join(CACHE, "work"), work)
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    cfg = TrainerConfig(backend="fsdp2", num_workers=1, num_threads=2, micro_batch_size=work.micro_batch_size,
                        lr=work.lr, total_steps=100, compile="layers", cpus_per_worker=1)
    algo = AlgorithmConfig(clip_low=work.epsilon, clip_high=work.epsilon)
    [trainer] = TrainerGroup(cfg, algo, spec["model_dir"], seed=0).handles
    batch = samples(work)
    denominator = float(sum(len(s.completion_ids) for s in batch))
    micro = -(-len(batch) // work.micro_batch_size)

    def train() -> float:
        return ray.get(trainer.train_step.remote(batch, denominator, micro))["time"]

    def timed(label: str, before=None) -> None:
        train()  # warm-up
        times = []
        for _ in range(args.steps):
            if before:
                before()
            times.append(train())
        print(f"{label:<12} train_step median {statistics.median(times):6.2f} s  {[round(t, 2) for t in times]}",
              flush=True)

    timed("alone")
    if args.alone_only:
        ray.shutdown()
        return
    rollout = RolloutConfig(engine="vllm", num_engines=1, num_threads=args.engine_threads, cpus_per_engine=1,
                            engine_kwargs={"enforce_eager": False})
    [engine] = RolloutGroup(rollout, spec["model_dir"], seed=0, dtype="float32").handles
    prompts = [s.prompt_ids for s in batch[:: work.group_size]]
    gen = SamplingSpec(n=work.group_size, max_tokens=work.max_new_tokens, temperature=1.0, ignore_eos=True)
    gen_times: list[float] = []

    def generate() -> None:
        t = time.perf_counter()
        ray.get(engine.generate.remote(prompts, gen))
        gen_times.append(time.perf_counter() - t)

    generate()
    timed("idle engine")
    timed("after gen", generate)
    state = ray.get(trainer.full_state_dict.remote())
    state_ref = ray.put(state)

    def sync_then_generate() -> None:
        ray.get(engine.update_weights.remote(state_ref, 1))
        generate()

    timed("after sync", sync_then_generate)
    print(f"generate median {statistics.median(gen_times):.2f} s over {len(gen_times)} calls")
    ray.shutdown()


if __name__ == "__main__":
    main()
