"""`ray job submit` of the default recipe against a real `ray start --head` cluster.

The head runs in its own temp dir; the test stops exactly that cluster's processes
(found by the temp dir in their command lines), never `ray stop`, which would kill
every Ray process on the machine, including the test session's own cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from rlvr.cluster.env import free_port
from tests.helpers.procs import kill_processes_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("RLVR_TEST_CACHE", os.path.join(REPO, ".cache", "rlvr"))
BIN = os.path.dirname(sys.executable)


@pytest.fixture
def ray_head():
    temp_dir = tempfile.mkdtemp(prefix="rlvr-head-", dir="/tmp")
    port, dash, agent, agent_grpc, runtime_env_agent, metrics = (free_port() for _ in range(6))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run([f"{BIN}/ray", "start", "--head", f"--port={port}", f"--dashboard-port={dash}",
                    "--dashboard-host=127.0.0.1", "--num-cpus=4", f"--temp-dir={temp_dir}", "--disable-usage-stats",
                    # own ports for the per-node agents: the test session's private cluster holds the defaults
                    f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                    f"--runtime-env-agent-port={runtime_env_agent}", f"--metrics-export-port={metrics}"],
                   env=env, check=True, capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dash}", env
    finally:
        kill_processes_of(temp_dir)


def test_job_submit_succeeds_and_writes_metrics(ray_head, tmp_path):
    address, env = ray_head
    env = {**env, "RAY_AUTH_MODE": "token"}  # Ray 2.60 token auth (see README)
    cmd = [f"{BIN}/ray", "job", "submit", f"--address={address}", f"--working-dir={REPO}",
           "--submission-id=rlvr-test-job", "--",
           "python", "-m", "rlvr.cli.main", "train", "recipes/tiny-cpu.yaml", "trainer.total_steps=2",
           "eval.num_prompts=32", "eval.every=0", "logging.progress=false", "run.name=job",
           f"run.output_dir={tmp_path}", f"model.cache_dir={CACHE}"]
    deadline = time.monotonic() + 240  # the head's job agent can take a while after `ray start` on a busy machine
    while True:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        if "No available agent" not in proc.stdout + proc.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    assert "succeeded" in (proc.stdout + proc.stderr).lower()
    with open(tmp_path / "job" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[-1]["tokens/generated"] > 0
    with open(tmp_path / "job" / "status.json") as f:
        status = json.load(f)
    assert status["state"] == "completed" and status["step"] == 2
    assert status["ray_job_id"] == "rlvr-test-job"  # the status API shows which Ray job runs it
