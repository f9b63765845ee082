"""Reward phase time per step when a verifier hangs on every sample (issue 21, "no silent hangs").

    PYTHONPATH=$PWD .venv/bin/python -m bench.reward_hang [--n 32] [--timeout 1] [--steps 3]

One `RewardWorker` (as one reward worker actor runs it), a step = one `score` of `--n`
samples scored by `tests.helpers.bad_verifiers:chaos`. Rows: healthy samples ("7"), then
samples on which it sleeps forever ("hang"), each with the verifier processes killed. Run it with
PYTHONPATH pointing at an older checkout to get its "before" figure (a worker without
`procs` is built with its defaults).
"""

from __future__ import annotations

import argparse
import inspect
import time

from rlvr.reward.worker import RewardWorker
from rlvr.types import RewardInput


def make_worker(timeout: float, procs: int, max_procs: int) -> RewardWorker:
    item = [{"name": "tests.helpers.bad_verifiers:chaos", "timeout_s": timeout}]
    if "procs" in inspect.signature(RewardWorker).parameters:
        return RewardWorker(item, default_timeout_s=timeout, procs=procs, max_procs=max_procs)
    return RewardWorker(item, default_timeout_s=timeout)


def steps(name: str, args) -> None:
    worker = make_worker(args.timeout, args.procs, args.max_procs)
    batch = [RewardInput(prompt="q", completion=name, answer="7") for _ in range(args.n)]
    try:
        for step in range(args.steps):
            before = worker.ping()["restarts"]
            start = time.perf_counter()
            results = worker.score(batch)
            seconds = time.perf_counter() - start
            failed = sum(bool(r.failures) for r in results)
            print(f"{name:>8} {step:>5} {seconds:>9.2f} {failed:>7} {worker.ping()['restarts'] - before:>6}", flush=True)
    finally:
        worker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--max-procs", type=int, default=16)
    parser.add_argument("--samples", nargs="+", default=["7", "hang"], help="chaos modes: 7 (healthy), hang")
    args = parser.parse_args()
    print(f"{args.n} samples a step, timeout {args.timeout:g} s")
    print(f"{'sample':>8} {'step':>5} {'seconds':>9} {'failed':>7} {'kills':>6}")
    for name in args.samples:
        steps(name, args)


if __name__ == "__main__":
    main()
