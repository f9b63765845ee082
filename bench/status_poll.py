"""What a dashboard poll of a long run's metrics costs the status service.

Writes a metrics.jsonl of `--steps` rows (~880 bytes each, like a real run's: 100k steps is
~88 MB), serves it with the real app on 127.0.0.1 (a uvicorn thread, as inside the driver)
and times, over real HTTP, the CPU seconds of this process (server and client together) and
the wall time of:

  * the first poll (`GET .../metrics`, the whole file parsed into the app's cache),
  * the dashboard's next polls (`?since=<last step>` after one more row is appended),
  * a full re-poll without `since` (the cache's rows, no file read),
  * `read_metrics(run)` without a cache, for comparison (what every poll cost before).

    python bench/status_poll.py [--steps 100000] [--polls 20] [--out bench/results/status_poll.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

KEYS = [f"{group}/{name}" for group in ("reward", "response_length", "timing")
        for name in ("mean", "std", "min", "max", "p50", "p90", "generate", "train", "sync")]


def _row(step: int) -> str:
    row = {"step": step, "loss": -0.01 * step, "kl": 0.001, "weight_version": step}
    row.update({k: round(0.123456789 * (i + 1) + step * 1e-6, 9) for i, k in enumerate(KEYS)})
    return json.dumps(row) + "\n"


def write_run(runs_dir: str, steps: int) -> str:
    from rlvr.run.status import RunStatus

    run_dir = os.path.join(runs_dir, "long")
    RunStatus(run_dir, "long", total_steps=steps + 1000).update(state="running", step=steps)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        for start in range(1, steps + 1, 1000):
            f.write("".join(_row(s) for s in range(start, min(start + 1000, steps + 1))))
    return run_dir


def timed(fn) -> tuple[float, float, object]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, out


def bench(steps: int, polls: int) -> dict:
    import httpx

    from rlvr.run.metrics import read_metrics
    from rlvr.service.server import start_in_thread

    runs_dir = tempfile.mkdtemp(prefix="rlvr-status-poll-")
    run_dir = write_run(runs_dir, steps)
    size_mb = os.path.getsize(os.path.join(run_dir, "metrics.jsonl")) / 1e6
    server = start_in_thread(runs_dir, "127.0.0.1", 0, None)
    out = {"steps": steps, "file_mb": round(size_mb, 1)}
    try:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            cpu, wall, r = timed(lambda: client.get("/api/v1/runs/long/metrics"))
            body = r.json()
            out["first_poll"] = {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "rows_returned": len(body["metrics"]),
                                 "thinned_before": body["thinned_before"], "response_mb": round(len(r.content) / 1e6, 2)}
            last, since_cpu, since_wall = steps, [], []
            for _ in range(polls):
                last += 1
                with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
                    f.write(_row(last))
                cpu, wall, r = timed(lambda: client.get(f"/api/v1/runs/long/metrics?since={last - 1}"))
                assert [row["step"] for row in r.json()["metrics"]] == [last], r.text[:200]
                since_cpu.append(cpu)
                since_wall.append(wall)
            out["next_polls_since"] = {"cpu_s_median": round(statistics.median(since_cpu), 4),
                                       "wall_s_median": round(statistics.median(since_wall), 4), "polls": polls}
            cpu, wall, r = timed(lambda: client.get("/api/v1/runs/long/metrics"))
            out["full_repoll"] = {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "rows_returned": len(r.json()["metrics"])}
    finally:
        server.stop()
    cpu, wall, rows = timed(lambda: read_metrics(run_dir))
    out["uncached_read_metrics"] = {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "rows": len(rows)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--polls", type=int, default=20)
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    result = bench(args.steps, args.polls)
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
