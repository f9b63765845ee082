"""`trainer.fused_logprobs` on vs off: time and peak memory, each case in its own process.

    python -m bench.fused_logprobs                    # the head alone: log-probs (+ logged entropy), fwd + bwd
    python -m bench.fused_logprobs --trainer          # + whole trainer steps on bench.compare_trl's model
    python -m bench.fused_logprobs --shapes qwen3-0.6b --chunks 0 256 1024

Head alone: h [N, H] and W [V, H] (fp32, both requiring grad), then what a trainer micro-batch
does with them: the logits path (`F.linear`, `algos.token_logprobs`, `algos.entropy_for_logging`)
or the fused one (`rlvr.trainer.logprobs.fused_token_logprobs`, entropy in the same pass), a
loss on the log-probs, backward. Shapes: `bench` is bench.compare_trl's model (hidden 512, the
local tokenizer's 384-token vocabulary, a 16 x 64-token micro-batch), `qwen3-0.6b` is H 1024,
V 151,936, N 2,048. Peak memory: the process's ru_maxrss after the runs minus its RSS with
the inputs allocated (a high-water mark, so the larger of warm-up and timed runs).

Trainer (`--trainer`): one in-process rank (gloo, world 1, `trainer.num_threads` = 2) on
bench.compare_trl's 38M model, `train_step` on 8 prompts x 8 completions x 64 tokens, micro-batch
16, shared prompts: the trainer's part of a compare_trl step without Ray or rollouts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

SHAPES = {"bench": (1024, 512, 384), "qwen3-0.6b": (2048, 1024, 151936)}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def head_case(shape: str, chunk: int, reps: int, threads: int) -> dict:
    """chunk < 0: the logits path; 0: fused with the automatic chunk; > 0: fused with that chunk."""
    import torch

    from rlvr import algos
    from rlvr.trainer.logprobs import default_chunk, fused_token_logprobs

    torch.set_num_threads(threads)
    n, hdim, v = SHAPES[shape]
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, hdim, generator=g).requires_grad_()
    w = (torch.randn(v, hdim, generator=g) * 0.02).requires_grad_()
    targets = torch.randint(0, v, (n,), generator=g)
    weights = torch.randn(n, generator=g)
    base = _rss_mb()
    times = []
    for _ in range(reps + 1):  # the first is a warm-up
        h.grad = w.grad = None
        t0 = time.perf_counter()
        if chunk < 0:
            logits = torch.nn.functional.linear(h, w)
            logp = algos.token_logprobs(logits, targets)
            ent = algos.entropy_for_logging(logits)
        else:
            logp, ent = fused_token_logprobs(h, w, None, targets, entropy=True, chunk=chunk or None)
        (weights * logp).sum().backward()
        float(ent.sum())
        times.append(time.perf_counter() - t0)
        del logp, ent
    return {"shape": shape, "N": n, "H": hdim, "V": v,
            "mode": "logits" if chunk < 0 else f"fused chunk={chunk or default_chunk(v)}",
            "seconds": statistics.median(times[1:]), "all_seconds": times, "peak_extra_mb": _peak_mb() - base}


def trainer_case(fused: bool, steps: int, threads: int) -> dict:
    import tempfile

    from bench.workload import Work, build
    from rlvr.cluster.env import free_port
    from rlvr.config import AlgorithmConfig, TrainerConfig
    from rlvr.trainer.worker import TrainerWorker
    from rlvr.types import TrainSample

    work = Work()
    spec = build(os.path.join(tempfile.gettempdir(), "rlvr-bench-fused", "workload"), work)
    cfg = TrainerConfig(num_workers=1, num_threads=threads, micro_batch_size=work.micro_batch_size,
                        total_steps=steps + 1, lr=1e-5, fused_logprobs=fused)
    worker = TrainerWorker(0, 1, cfg, AlgorithmConfig(), seed=0)
    worker.setup(("127.0.0.1", free_port()), spec["model_dir"])
    import random

    rng = random.Random(0)
    vocab = 384
    samples = []
    for p in range(work.prompts_per_step):
        prompt = [rng.randrange(3, vocab) for _ in range(24 + p)]
        for _ in range(work.group_size):
            c = work.max_new_tokens
            samples.append(TrainSample(prompt, [rng.randrange(3, vocab) for _ in range(c)], rng.uniform(-1, 1),
                                       [-1.0] * c))
    base = _rss_mb()
    times = []
    for _ in range(steps + 1):
        out = worker.train_step(samples, float(len(samples) * work.max_new_tokens), -(-len(samples) // work.micro_batch_size))
        times.append(out["time"])
    return {"mode": "fused" if fused else "logits", "steps": steps, "seconds": statistics.median(times[1:]),
            "all_seconds": times, "peak_rss_mb": _peak_mb(), "peak_extra_mb": _peak_mb() - base}


def _in_subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.fused_logprobs", "--one", *args], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="*", default=list(SHAPES))
    ap.add_argument("--chunks", nargs="*", type=int, default=[0, 1024], help="fused chunk sizes (0: automatic)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trainer", action="store_true", help="also whole trainer steps, fused on and off")
    ap.add_argument("--steps", type=int, default=3, help="trainer steps timed (after one warm-up)")
    ap.add_argument("--one", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one is not None:  # a single case, in this process
        kind, *rest = args.one
        result = (head_case(rest[0], int(rest[1]), args.reps, args.threads) if kind == "head"
                  else trainer_case(rest[0] == "fused", args.steps, args.threads))
        print(json.dumps(result))
        return 0
    common = ["--reps", str(args.reps), "--threads", str(args.threads), "--steps", str(args.steps)]
    for shape in args.shapes:
        for chunk in [-1, *args.chunks]:
            r = _in_subprocess(["head", shape, str(chunk), *common])
            print(f"{shape:11s} N={r['N']} H={r['H']} V={r['V']:6d} {r['mode']:18s} fwd+bwd {r['seconds']:7.3f} s  "
                  f"peak +{r['peak_extra_mb']:7.0f} MB", flush=True)
    if args.trainer:
        for mode in ("logits", "fused"):
            r = _in_subprocess(["trainer", mode, *common])
            print(f"trainer step ({mode:6s}) median {r['seconds']:.2f} s over {r['steps']} "
                  f"{[round(t, 2) for t in r['all_seconds']]}  peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"(+{r['peak_extra_mb']:.0f} during steps)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
