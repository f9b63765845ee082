"""Reward scoring throughput: 1 vs 2 verifier worker processes on the same 512 completions.

    .venv/bin/python -m bench.reward_throughput [--n 512] [--workers 1 2]

Completions are "realistic" math answers that math-verify must parse (boxed
fractions, expressions, think blocks, plain sentences), so the exact-integer
fast path does not apply. Each worker is a `RewardWorker` (one child process
running the verifiers in its main thread); with several, the batch is split
evenly and the workers run at once, as the driver does with its Ray actors.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from rlvr.reward.worker import RewardWorker
from rlvr.types import RewardInput


def completions(n: int, seed: int = 0) -> list[RewardInput]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 50), rng.randint(2, 60)
        kind = rng.randrange(4)
        answer = f"\\frac{{{a}}}{{{b}}}"
        if kind == 0:
            text = f"<think>divide {a} by {b}</think> The answer is $\\boxed{{\\frac{{{a}}}{{{b}}}}}$."
        elif kind == 1:
            text = f"We get {a}/{b}, so the result is \\boxed{{{a / b:.4f}}}"
        elif kind == 2:
            text = f"<think>{a}*2 = {2 * a}</think>\\boxed{{\\frac{{{2 * a}}}{{{2 * b}}}}}"
        else:
            text = f"Final answer: \\( \\sqrt{{{a}}} + {b} \\)"
        out.append(RewardInput(prompt="q", completion=text, answer=answer))
    return out


def run(num_workers: int, batch: list[RewardInput], repeats: int) -> float:
    workers = [RewardWorker([{"name": "math"}], default_timeout_s=5.0) for _ in range(num_workers)]
    try:
        shards = [batch[i::num_workers] for i in range(num_workers)]
        with ThreadPoolExecutor(num_workers) as pool:
            list(pool.map(lambda ws: ws[0].score(ws[1]), zip(workers, shards)))  # warm-up (imports, sympy caches)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                list(pool.map(lambda ws: ws[0].score(ws[1]), zip(workers, shards)))
                times.append(time.perf_counter() - start)
        return statistics.median(times)
    finally:
        for w in workers:
            w.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    batch = completions(args.n)
    base = None
    print(f"{'workers':>8} {'seconds':>8} {'samples/s':>10} {'speedup':>8}")
    for n in args.workers:
        seconds = run(n, batch, args.repeats)
        base = base or seconds
        print(f"{n:>8} {seconds:>8.3f} {args.n / seconds:>10.0f} {base / seconds:>7.2f}x")


if __name__ == "__main__":
    main()
