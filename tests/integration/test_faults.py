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
import time

import pytest

from rlvr.run.metrics import read_metrics
from tests.helpers.runs import BackgroundRun, DriverProcess, console_noise, expected_prompts, read_status, step_prompts
from tests.helpers.procs import wait_for

pytestmark = pytest.mark.timeout(900)


def test_killed_engine_and_reward_worker_are_replaced(ray_cluster, warm_model_dir, tmp_path):
    overrides = ["trainer.total_steps=4", "eval.every=0", "eval.num_prompts=8", "checkpoint.save_final=false",
                 "rollout.max_tokens=32", "rollout.ignore_eos=true", "logging.samples_per_step=512",
                 "reward.num_workers=2", "reward.cpus_per_worker=0.25", "service.heartbeat_s=1",
                 "reward.verifiers=[{name: 'tests.helpers.bad_verifiers:slow_exact'}]"]
    run = BackgroundRun(tmp_path, "faults", overrides)
    status = run.wait_in(2, "generate")
    killed_engine = status["placement"]["engines"][0]["pid"]
    os.kill(killed_engine, signal.SIGKILL)
    status = run.wait_in(3, "reward")
    os.kill(status["placement"]["rewarders"][0]["pid"], signal.SIGKILL)
    result = run.join()
    assert "summary" in result, result.get("error", "the run did not finish")
    run_dir = run.run_dir

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
    overrides = ["trainer.total_steps=200", "checkpoint.every=2", "eval.every=0", "eval.num_prompts=8",
                 "logging.samples_per_step=512"]
    driver = DriverProcess(tmp_path, "killed", overrides)
    driver.kill_after_step(3)  # mid-run, after the step-2 checkpoint
    run_dir = driver.run_dir
    assert read_metrics(run_dir)[-1]["step"] >= 3

    resumed = driver.start(["checkpoint.resume=auto"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: read_status(run_dir).get("step", 0) >= 4 and read_status(run_dir).get("state") == "running",
                 "step 4 of the resumed run", timeout_s=400)
        resumed.send_signal(signal.SIGTERM)
        out, _ = resumed.communicate(timeout=300)
    finally:
        resumed.kill()
        driver.cleanup()
    assert resumed.returncode == 0, out[-3000:]
    assert "resumed at step 2" in out
    # `make run`'s command: a quiet console (rlvr's lines only; vLLM/Ray/actors' output in logs/)
    assert console_noise(out) == [], console_noise(out)
    assert any(name.startswith("engine-") for name in os.listdir(os.path.join(run_dir, "logs")))
    assert "SIGTERM: stopping after this step with a checkpoint" in out
    status = read_status(run_dir)
    assert status["state"] == "stopped" and 4 <= status["step"] < 200
    with open(os.path.join(run_dir, "checkpoints", "final", "rlvr_state.json")) as f:
        assert json.load(f)["step"] == status["step"]
    steps = [r["step"] for r in read_metrics(run_dir)]
    assert steps == list(range(status["step"] + 1))  # step 3 (done before the kill) is redone once
    expected = expected_prompts(["trainer.total_steps=200"], status["step"], warm_model_dir)
    assert [step_prompts(run_dir, s, 8) for s in range(1, status["step"] + 1)] == expected


def test_a_dead_trainer_rank_stops_the_run_quickly_and_clearly(ray_cluster, warm_model_dir, tmp_path):
    """The surviving rank would wait in a collective for the dead one until gloo times out;
    the driver does not wait for it: the run fails at once, naming the call, and is resumable."""
    from rlvr.cluster.remote import RemoteCallError

    run = BackgroundRun(tmp_path, "rank-dies", ["trainer.total_steps=200", "eval.every=0", "eval.num_prompts=8",
                                                "service.heartbeat_s=1"])
    status = run.wait_until(lambda s: s.get("step", 0) >= 2 and s.get("phase") == "train", "step 3 training")
    os.kill(status["placement"]["trainers"][1]["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    result = run.join(timeout_s=120)
    assert not run.thread.is_alive(), "the run hung after a trainer rank died"
    assert time.monotonic() - t0 < 60
    assert isinstance(result.get("error"), RemoteCallError)
    assert "on the trainer ranks failed" in str(result["error"]) or "weight sync" in str(result["error"])
    final = read_status(run.run_dir)
    assert final["state"] == "failed" and "RemoteCallError" in final["error"]
