"""Two Ray nodes on one machine (`ray.cluster_utils.Cluster`, in a child process so it does
not meet the test session's own cluster): trainer ranks on one node, the engine on the
other, weights synced by broadcast and verified by the log-prob probe at every step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import CACHE, REPO

pytestmark = pytest.mark.timeout(900)


def test_trainers_and_engine_on_different_nodes(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "tests.integration.multinode_run", str(tmp_path), CACHE],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    nodes = json.load(open(tmp_path / "nodes.json"))
    trainer_node = next(n for n, tags in nodes.items() if tags == ["trainer_node"])
    engine_node = next(n for n, tags in nodes.items() if tags == ["engine_node"])
    status = json.load(open(tmp_path / "two-nodes" / "status.json"))
    assert status["state"] == "completed" and status["step"] == 3
    assert [p["node"] for p in status["placement"]["trainers"]] == [trainer_node, trainer_node]
    assert [p["node"] for p in status["placement"]["engines"]] == [engine_node]
    rows = [json.loads(line) for line in open(tmp_path / "two-nodes" / "metrics.jsonl")][1:]
    assert [r["weight_version"] for r in rows] == [1, 2, 3]
    assert all(r["sync/verify_max_diff"] < 1e-3 for r in rows)  # the engine runs the trainer's weights
