"""Fault injection on the tiny recipe with real Ray: processes are SIGKILLed mid-step.

* an engine killed while it generates is replaced, its prompts are generated again,
  and the step completes (`faults/rollout_restarts`);
* a reward worker killed while it scores is replaced and its samples are scored again
  on another worker (`faults/reward_restarts`);
* the driver killed with SIGKILL: the same command with `checkpoint.resume=auto`
  continues from the last checkpoint, and on SIGTERM stops after the step with a checkpoint;
* a trainer rank killed: the run fails at once, naming the call.
Each run must end with the right steps, each once, on the prompts the sampler
prescribes (nothing lost, nothing done twice)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from rlvr.config import load_recipe
from rlvr.run.metrics import read_metrics
from tests.conftest import CACHE, REPO
from tests.helpers.runs import RECIPE, run_short
from tests.helpers.procs import kill_processes_of, wait_for

pytestmark = pytest.mark.timeout(900)


def expected_prompts(cfg_overrides: list[str], steps: int, model_dir: str) -> list[list[str]]:
    """The prompts the sampler prescribes for steps 1..steps (what an undisturbed run draws)."""
    from transformers import AutoTokenizer

    from rlvr.data.rows import PromptSampler, load_train_and_eval

    cfg = load_recipe(RECIPE, cfg_overrides)
    train, _ = load_train_and_eval(cfg.data, AutoTokenizer.from_pretrained(model_dir))
    sampler = PromptSampler(len(train), cfg.run.seed)
    return [[train[i].text for i in sampler.next_batch(cfg.data.prompts_per_step)] for _ in range(steps)]


def step_prompts(run_dir: str, step: int, n: int) -> list[str]:
    """The distinct prompts of a step, in order, from its sample records (all samples kept)."""
    with open(os.path.join(run_dir, "samples", f"step_{step:06d}.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [row["prompt"] for row in rows[::n]]


def read_status(run_dir: str) -> dict:
    try:
        with open(os.path.join(run_dir, "status.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def test_killed_engine_and_reward_worker_are_replaced(ray_cluster, warm_model_dir, tmp_path):
    overrides = ["trainer.total_steps=4", "eval.every=0", "eval.num_prompts=8", "checkpoint.save_final=false",
                 "rollout.max_tokens=32", "rollout.ignore_eos=true", "logging.samples_per_step=512",
                 "reward.num_workers=2", "reward.cpus_per_worker=0.25", "service.heartbeat_s=1",
                 "reward.verifiers=[{name: 'tests.helpers.bad_verifiers:slow_exact'}]"]
    run_dir = os.path.join(tmp_path, "faults")
    result: dict = {}

    def train():
        try:
            result["summary"] = run_short(tmp_path, "faults", overrides)
        except BaseException as e:  # reported by in_phase / the assertions below
            result["error"] = e

    thread = threading.Thread(target=train, daemon=True)
    thread.start()

    def in_phase(step: int, phase: str):
        assert "error" not in result, result.get("error")
        s = read_status(run_dir)
        return s if s.get("step") == step - 1 and s.get("phase") == phase else None

    status = wait_for(lambda: in_phase(2, "generate"), "step 2 generating")
    killed_engine = status["placement"]["engines"][0]["pid"]
    os.kill(killed_engine, signal.SIGKILL)
    status = wait_for(lambda: in_phase(3, "reward"), "step 3 scoring")
    os.kill(status["placement"]["rewarders"][0]["pid"], signal.SIGKILL)
    thread.join(timeout=600)
    assert "summary" in result, result.get("error", "the run did not finish")

    rows = read_metrics(run_dir)[1:]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["faults/rollout_restarts"] == 1 and rows[-1]["faults/reward_restarts"] == 1
    assert all(r["reward/tests.helpers.bad_verifiers:slow_exact/failures"] == 0 for r in rows)
    expected = expected_prompts(overrides[:1], 4, warm_model_dir)
    assert [step_prompts(run_dir, s, 8) for s in (1, 2, 3, 4)] == expected
    final = read_status(run_dir)
    assert final["state"] == "completed"
    assert final["placement"]["engines"][0]["pid"] != killed_engine  # the replacement is what status shows


def test_driver_killed_with_sigkill_resumes_then_stops_cleanly_on_sigterm(ray_cluster, warm_model_dir, tmp_path):
    """One run, as a user's `rlvr train` process with its own Ray cluster:
    1. SIGKILL after the step-2 checkpoint; the same command with `checkpoint.resume=auto`
       continues from it (the step done after the checkpoint is redone, once);
    2. SIGTERM (`ray job stop`, a scheduler) to the resumed run: it finishes the step, writes
       a final checkpoint of that step and exits 0 as "stopped".
    Every step is recorded once, on the prompts the sampler prescribes."""
    temp_dir = tempfile.mkdtemp(prefix="rlvr-kill-", dir="/tmp")
    args = ["recipes/tiny-cpu.yaml", f"run.output_dir={tmp_path}", "run.name=killed", f"model.cache_dir={CACHE}",
            "logging.progress=false", "trainer.total_steps=200", "checkpoint.every=2", "eval.every=0",
            "eval.num_prompts=8", "logging.samples_per_step=512", "logging.plots=false", f"cluster.temp_dir={temp_dir}"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "rlvr.cli.main", "train", *args]
    run_dir = os.path.join(tmp_path, "killed")
    driver = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_for(lambda: read_status(run_dir).get("step", 0) >= 3, "step 3", timeout_s=400)
        os.kill(driver.pid, signal.SIGKILL)  # mid-run, after the step-2 checkpoint
        driver.wait(timeout=30)
    finally:
        kill_processes_of(temp_dir)  # the dead driver's private Ray cluster
    assert read_metrics(run_dir)[-1]["step"] >= 3

    resumed = subprocess.Popen(cmd + ["checkpoint.resume=auto"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: read_status(run_dir).get("step", 0) >= 4 and read_status(run_dir).get("state") == "running",
                 "step 4 of the resumed run", timeout_s=400)
        resumed.send_signal(signal.SIGTERM)
        out, _ = resumed.communicate(timeout=300)
    finally:
        resumed.kill()
        kill_processes_of(temp_dir)
    assert resumed.returncode == 0, out[-3000:]
    assert "resumed at step 2" in out
    assert "SIGTERM: stopping after this step with a checkpoint" in out
    status = read_status(run_dir)
    assert status["state"] == "stopped" and 4 <= status["step"] < 200
    with open(os.path.join(run_dir, "checkpoints", "final", "rlvr_state.json")) as f:
        assert json.load(f)["step"] == status["step"]
    steps = [r["step"] for r in read_metrics(run_dir)]
    assert steps == list(range(status["step"] + 1))  # step 3 (done before the kill) is redone once
    expected = expected_prompts(args[1:2] + ["trainer.total_steps=200"], status["step"], warm_model_dir)
    assert [step_prompts(run_dir, s, 8) for s in range(1, status["step"] + 1)] == expected


def test_a_dead_trainer_rank_stops_the_run_quickly_and_clearly(ray_cluster, warm_model_dir, tmp_path):
    """The surviving rank would wait in a collective for the dead one until gloo times out;
    the driver does not wait for it: the run fails at once, naming the call, and is resumable."""
    from rlvr.cluster.remote import RemoteCallError

    run_dir = os.path.join(tmp_path, "rank-dies")
    result: dict = {}

    def train():
        try:
            run_short(tmp_path, "rank-dies", ["trainer.total_steps=200", "eval.every=0", "eval.num_prompts=8",
                                              "service.heartbeat_s=1"])
        except BaseException as e:
            result["error"] = e

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    status = wait_for(lambda: (lambda s: s if s.get("step", 0) >= 2 and s.get("phase") == "train" else None)(
        read_status(run_dir)), "step 3 training")
    os.kill(status["placement"]["trainers"][1]["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the run hung after a trainer rank died"
    assert time.monotonic() - t0 < 60
    assert isinstance(result.get("error"), RemoteCallError)
    assert "on the trainer ranks failed" in str(result["error"]) or "weight sync" in str(result["error"])
    final = read_status(run_dir)
    assert final["state"] == "failed" and "RemoteCallError" in final["error"]
