"""`ray job submit` of the default recipe against a real `ray start --head` cluster (4 CPUs):
it succeeds; a recipe the cluster cannot hold fails within seconds naming CPUs; SIGTERM to a
driver still waiting for resources stops it at once.

The head runs in its own temp dir; the test stops exactly that cluster's processes
(found by the temp dir in their command lines), never `ray stop`, which would kill
every Ray process on the machine, including the test session's own cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from rlvr.cluster.env import free_port
from tests.helpers.procs import kill_processes_of, wait_for
from tests.helpers.runs import console_noise

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("RLVR_TEST_CACHE", os.path.join(REPO, ".cache", "rlvr"))
BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def ray_head():
    temp_dir = tempfile.mkdtemp(prefix="rlvr-head-", dir="/tmp")
    port, dash, agent, agent_grpc, runtime_env_agent, metrics = (free_port() for _ in range(6))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    started = subprocess.run([f"{BIN}/ray", "start", "--head", f"--port={port}", f"--dashboard-port={dash}",
                    "--dashboard-host=127.0.0.1", "--num-cpus=4", f"--temp-dir={temp_dir}", "--disable-usage-stats",
                    # own ports for the per-node agents: the test session's private cluster holds the defaults
                    f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                    f"--runtime-env-agent-port={runtime_env_agent}", f"--metrics-export-port={metrics}"],
                   env=env, check=True, capture_output=True, text=True, timeout=180)
    gcs = re.search(r"--address='([^']+)'", started.stdout).group(1)  # the node's IP, where the GCS listens
    try:
        yield f"http://127.0.0.1:{dash}", env, gcs
    finally:
        kill_processes_of(temp_dir)


def _submit(address: str, env: dict, submission_id: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {**env, "RAY_AUTH_MODE": "token"}  # Ray 2.60 token auth (see README)
    cmd = [f"{BIN}/ray", "job", "submit", f"--address={address}", f"--working-dir={REPO}",
           f"--submission-id={submission_id}", "--", "python", "-m", "rlvr.cli.main", "train", *args]
    deadline = time.monotonic() + 240  # the head's job agent can take a while after `ray start` on a busy machine
    while True:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        if "No available agent" not in proc.stdout + proc.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def test_job_submit_succeeds_and_writes_metrics(ray_head, tmp_path):
    address, env, _ = ray_head
    proc = _submit(address, env, "rlvr-test-job", [
        "recipes/tiny-cpu.yaml", "trainer.total_steps=2", "eval.num_prompts=32", "eval.every=0",
        "logging.progress=false", "run.name=job", f"run.output_dir={tmp_path}", f"model.cache_dir={CACHE}"])
    assert proc.returncode == 0
    assert "succeeded" in (proc.stdout + proc.stderr).lower()
    with open(tmp_path / "job" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[-1]["tokens/generated"] > 0
    out = proc.stdout + proc.stderr  # a quiet console: rlvr's lines only, the actors' output in the run folder
    assert console_noise(out, strict=False) == []  # (`ray job submit` prints its own INFO lines)
    logs = os.listdir(tmp_path / "job" / "logs")
    assert sorted({name.split("-")[0] for name in logs}) == ["engine", "reward_worker", "trainer"]
    engine_log = next(name for name in logs if name.startswith("engine-"))
    assert "WARNING" in (tmp_path / "job" / "logs" / engine_log).read_text()  # vLLM's start-up lines went there
    with open(tmp_path / "job" / "status.json") as f:
        status = json.load(f)
    assert status["state"] == "completed" and status["step"] == 2
    assert status["ray_job_id"] == "rlvr-test-job"  # the status API shows which Ray job runs it


def test_job_too_big_for_the_cluster_fails_at_once_naming_cpus(ray_head, tmp_path):
    """6 logical CPUs asked (2 ranks x 1 + 1 engine x 1 + 6 reward workers x 0.5) of a 4-CPU head:
    one line naming CPUs and the keys, before any actor starts (on main it waited forever)."""
    address, env, _ = ray_head
    t0 = time.monotonic()
    proc = _submit(address, env, "rlvr-test-too-big", [
        "recipes/tiny-cpu.yaml", "reward.num_workers=6", "logging.progress=false", "run.name=big",
        f"run.output_dir={tmp_path}", f"model.cache_dir={CACHE}"])
    assert time.monotonic() - t0 < 120  # job upload + driver start + the check; the driver itself fails in seconds
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "failed" in out.lower()
    assert "need 6 CPU (the cluster has 4)" in out and "reward.num_workers" in out
    with open(tmp_path / "big" / "status.json") as f:
        status = json.load(f)
    assert status["state"] == "failed" and "6 CPU" in status["error"]


def test_sigterm_while_waiting_for_resources_stops_at_once(ray_head, tmp_path):
    """`cluster.wait_for_resources` on a cluster that cannot place the trainer bundles (2 x 3 CPUs
    + 1 engine + 0.5 reward worker: 8 of 4): the driver waits, printing what for; SIGTERM ends it within seconds, state `stopped`."""
    _, env, gcs = ray_head
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rlvr.cli.main", "train", "recipes/tiny-cpu.yaml",
                                 "trainer.cpus_per_worker=3", "cluster.wait_for_resources=true",
                                 f"cluster.address={gcs}", "logging.progress=false", "run.name=wait",
                                 f"run.output_dir={tmp_path}", f"model.cache_dir={CACHE}"],
                                env={**env, "RAY_AUTH_MODE": "token"}, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "waiting up to" in log.read_text() or proc.poll() is not None, "the waiting line", 240, 0.5)
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(2)  # inside the placement group's wait
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()[-3000:]
        assert time.monotonic() - t0 < 30
    finally:
        proc.kill()
    text = log.read_text()
    assert "needs 8 CPU (the cluster has 4)" in text and "stopped before the first step" in text
    assert "Traceback" not in text
    with open(tmp_path / "wait" / "status.json") as f:
        assert json.load(f)["state"] == "stopped"
