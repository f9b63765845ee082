"""Does a recipe fit a Ray cluster (`rlvr.cluster.fit`): the pure needs/shortfall arithmetic."""

from __future__ import annotations

import doctest

from rlvr.cluster import fit
from rlvr.config import Config, load_recipe


def test_doctests():
    assert doctest.testmod(fit).failed == 0


def test_default_recipe_needs_four_cpus_and_a_one_cpu_head_names_them():
    cfg = load_recipe("recipes/tiny-cpu.yaml", [])
    need = fit.needs(cfg)
    assert need == {"CPU": 4}  # 2 ranks x 1 + 1 engine x 1 + 1 reward worker x 0.5, rounded up
    msg = fit.fit_message(need, {"CPU": 1.0, "memory": 1e9})
    assert "\n" not in msg
    assert "4 CPU (the cluster has 1)" in msg and "trainer.cpus_per_worker" in msg and "--num-cpus 4" in msg
    assert fit.shortfalls(need, {"CPU": 4.0}) == []


def test_gpus_and_custom_resources_are_counted():
    cfg = Config()
    cfg.trainer.gpus_per_worker, cfg.rollout.gpus_per_engine = 1.0, 0.5  # 2 x 1 + 1 x 0.5
    cfg.trainer.resources = {"node_a": 0.01}
    need = fit.needs(cfg)
    assert need["GPU"] == 2.5 and need["node_a"] == 0.02
    msg = fit.fit_message(need, {"CPU": 8.0, "GPU": 2.0})
    assert "2.5 GPU (the cluster has 2)" in msg and "0.02 node_a (the cluster has 0)" in msg
    assert "rollout.gpus_per_engine" in msg and "trainer.resources" in msg and "--num-cpus" not in msg
