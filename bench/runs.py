"""Shared by the training benchmarks: run the tiny recipe with overrides, summarise it."""

from __future__ import annotations

import json
import os
import statistics
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO, "recipes", "tiny-cpu.yaml")
RESULTS = os.path.join(REPO, "bench", "results")


def run(name: str, overrides: list[str], out_dir: str, recipe: str = RECIPE) -> dict:
    """Train a recipe (`recipes/tiny-cpu.yaml` unless told) with `overrides`; return the metric
    rows and the wall time."""
    from rlvr.config import load_recipe
    from rlvr.loop.train import train
    from rlvr.run.metrics import read_metrics

    cfg = load_recipe(recipe, [f"run.output_dir={out_dir}", f"run.name={name}", "logging.progress=false",
                               "checkpoint.save_final=false", *overrides])
    t0 = time.perf_counter()
    summary = train(cfg)
    return {"wall_s": time.perf_counter() - t0, "rows": read_metrics(summary["run_dir"])}


def median_after_warmup(rows: list[dict], key: str, warmup: int = 3) -> float:
    values = [r[key] for r in rows if r.get("step", 0) > warmup and r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def eval_curve(rows: list[dict]) -> list[tuple[int, float]]:
    return [(r["step"], round(r["eval/accuracy"], 3)) for r in rows if r.get("eval/accuracy") is not None]


def save(name: str, payload: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    return path
