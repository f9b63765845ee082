"""`rlvr train RECIPE --smoke` of the shipped recipes, in this process on the session's Ray
cluster: each runs its 2 steps through the real stack (its placement, backend and ZeRO stage,
sync method, LoRA, algorithm, async staleness, multi-turn / agent settings) on the tiny model of
its architecture family, and writes metrics rows and a final checkpoint.

Recipes that share a structure (`structure` below) run once, by a representative (`groups`):
a run costs ~30-60 s on 2 cores, almost all of it starting the engine and the
ranks, and what tells the others apart (the model family, the preset's loss math, the sizes)
is checked elsewhere: each family by the model matrix (test_model_matrix.py), the algorithms
in tests/unit/test_algos.py, every recipe's smoke config in tests/unit/test_recipes.py.
"""

from __future__ import annotations

import glob
import os
import time

import pytest

from rlvr.config import load_recipe
from rlvr.config.smoke import load_smoke
from rlvr.run.metrics import read_metrics
from tests.helpers.runs import CACHE, REPO

# the tiny CPU recipes train for real in other tests (test_short_run_outputs, test_multi_turn,
# test_agent_runs, tests/e2e; tiny-sft-cpu: `rlvr sft`, tests/e2e/test_sft.py); their smoke configs are
# checked in tests/unit/test_recipes.py
TINY = ("tiny-cpu.yaml", "tiny-tools-cpu.yaml", "tiny-agent-cpu.yaml", "tiny-sft-cpu.yaml")
RECIPES = sorted(r for r in glob.glob(os.path.join(REPO, "recipes", "*.yaml")) if os.path.basename(r) not in TINY)


def structure(recipe: str) -> tuple:
    """What a smoke run of `recipe` exercises beyond what other tests check: the trainer backend
    and ZeRO stage, LoRA, async staleness, multi-turn / agent settings. Placement (colocate is
    trained by tests/e2e/test_tools_learning.py), presets (tests/e2e/test_learning.py), eval
    sets and the model family (the model matrix) are covered elsewhere."""
    cfg = load_recipe(recipe, check=False)
    t, r = cfg.trainer, cfg.rollout
    return (t.backend, t.deepspeed.zero_stage if t.backend == "deepspeed" else None, cfg.model.lora.rank > 0,
            r.max_staleness, r.multi_turn.enabled, r.agent is not None)


def groups() -> dict[str, list[str]]:
    """Representative recipe -> the recipes that share its structure. The representative is the
    first that trains on a random model's all-equal rewards (DAPO's dynamic sampling drops them)."""
    out: dict[tuple, list[str]] = {}
    for recipe in RECIPES:
        out.setdefault(structure(recipe), []).append(recipe)

    def trains(recipe: str) -> bool:
        return not load_recipe(recipe, check=False).algorithm.dynamic_sampling.enabled

    reps = {}
    for members in out.values():
        rep = next((m for m in members if trains(m)), members[0])
        reps[rep] = [rep] + [m for m in members if m != rep]
    return reps


GROUPS = groups()


def _id(recipe: str) -> str:
    return "+".join(os.path.basename(m)[:-5] for m in GROUPS[recipe])


@pytest.mark.parametrize("recipe", list(GROUPS), ids=[_id(r) for r in GROUPS])
def test_smoke_run_of_each_recipe_structure(ray_cluster, warm_model_dir, tools_model_dir, recipe, tmp_path):
    from rlvr.loop.train import train

    cfg, _ = load_smoke(recipe, ["logging.progress=false"], output_dir=str(tmp_path), cache_dir=CACHE)
    start = time.perf_counter()
    summary = train(cfg)
    print(f"{_id(recipe)}: {time.perf_counter() - start:.1f} s")
    rows = read_metrics(summary["run_dir"])
    steps = [r["step"] for r in rows if r.get("step", 0) >= 1 and "timing/step" in r]
    assert steps == [1, 2], f"expected 2 training steps, got metrics rows for {steps}"
    if cfg.algorithm.dynamic_sampling.enabled:  # DAPO drops the random model's all-zero groups: nothing to train
        assert all(r["dynamic_sampling/rounds"] >= 1 for r in rows if r.get("step", 0) >= 1 and "timing/step" in r)
    else:  # both steps trained and pushed their weights (smoke trains uniform groups)
        assert rows[-1]["weight_version"] == 2
    assert summary["checkpoint"] and any(os.path.isfile(os.path.join(summary["checkpoint"], f))
                                         for f in ("config.json", "adapter_config.json"))  # LoRA: the adapter
