"""Recovery that the actor groups own, with real processes SIGKILLed mid-run (the fault-matrix
style of `test_faults.py`):

* an engine killed *during a weight sync* is replaced, joins a new sync group and gets the
  version that was being pushed; the run goes on (`faults/rollout_restarts`);
* a trainer rank killed while it trains (`trainer.max_restarts: 1`): the ranks are started
  again and the run goes back to its latest complete checkpoint in the same driver
  (`faults/trainer_restarts`), doing the steps after it again;
* with async rollouts (`rollout.max_staleness: 1`) a driver killed after a checkpoint and
  resumed with `checkpoint.resume=auto` trains on exactly the batches an uninterrupted run
  trains on: the checkpoint holds the batch that was generating.

Each run must end with every step once, on the prompts the sampler prescribes; the engines
must hold the trainer's weights after every sync (`sync.verify: always`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from rlvr.run.metrics import read_metrics
from tests.helpers.runs import (BackgroundRun, DriverProcess, expected_prompts, read_status, run_short, step_prompts,
                                step_samples)

pytestmark = pytest.mark.timeout(900)


def test_engine_dying_in_a_sync_and_a_trainer_rank_dying_are_recovered(ray_cluster, warm_model_dir, tmp_path, capsys):
    overrides = ["trainer.total_steps=6", "trainer.max_restarts=1", "checkpoint.every=2", "checkpoint.save_final=false",
                 "eval.every=0", "eval.num_prompts=8", "logging.samples_per_step=512", "service.heartbeat_s=1",
                 "sync.bucket_mb=0.002", "sync.verify=always"]  # 2 KB buckets: a sync takes long enough to hit
    run = BackgroundRun(tmp_path, "recovery", overrides)
    status = run.wait_in(2, "sync")
    killed_engine = status["placement"]["engines"][0]["pid"]
    os.kill(killed_engine, signal.SIGKILL)
    status = run.wait_in(4, "train")  # checkpoints so far: step 2
    killed_rank = status["placement"]["trainers"][1]["pid"]
    os.kill(killed_rank, signal.SIGKILL)
    result = run.join()
    assert "summary" in result, result.get("error", "the run did not finish")
    run_dir = run.run_dir
    out = capsys.readouterr().out

    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5, 6]  # steps 3 and 4 done again after step 2, once each
    assert rows[-1]["faults/rollout_restarts"] == 1 and rows[-1]["faults/trainer_restarts"] == 1
    assert all(r["weight_version"] == r["step"] for r in rows[1:])  # every sync delivered, the recovered one too
    assert all(r["sync/verify_max_diff"] < 1e-3 for r in rows[1:])  # the engines run the trainer's weights
    assert "engine 0 died (weight sync (broadcast, version 2) failed" in out  # replaced by the sync, mid-push
    assert "continuing from step 2" in out
    expected = expected_prompts(overrides[:1], 6, warm_model_dir)
    assert [step_prompts(run_dir, s, 8) for s in range(1, 7)] == expected
    final = read_status(run_dir)
    assert final["state"] == "completed"
    assert final["placement"]["engines"][0]["pid"] != killed_engine
    assert killed_rank not in [t["pid"] for t in final["placement"]["trainers"]]


ASYNC = ["rollout.max_staleness=1", "trainer.total_steps=6", "checkpoint.every=2", "checkpoint.keep_last=0",
         "eval.every=0", "eval.num_prompts=8", "logging.samples_per_step=512"]
COMPARED = ("reward/mean", "loss", "grad_norm", "response_length/mean", "train/entropy", "rollout/staleness")


def test_async_run_killed_and_resumed_trains_on_the_same_batches(ray_cluster, warm_model_dir, tmp_path):
    full = run_short(tmp_path, "async-full", ASYNC)  # the uninterrupted run

    driver = DriverProcess(tmp_path, "async-killed", ASYNC)
    driver.kill_after_step(3)  # after the step-2 checkpoint, with batch 3 (or 4) generated
    run_dir = driver.run_dir
    with open(os.path.join(run_dir, "checkpoints", "step_000002", "rollout_batch.json")) as f:
        assert json.load(f)["step"] == 3  # the batch that was generating when the checkpoint was taken

    resumed = driver.start(["checkpoint.resume=auto"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = resumed.communicate(timeout=600)
    finally:
        resumed.kill()
        driver.cleanup()
    assert resumed.returncode == 0, out[-3000:] + err[-3000:]
    assert "resumed at step" in out

    rows_a, rows_b = read_metrics(full["run_dir"]), read_metrics(run_dir)
    assert [r["step"] for r in rows_b] == [0, 1, 2, 3, 4, 5, 6]  # no step lost, none twice
    assert rows_a[1]["rollout/staleness"] == 0.0 and all(r["rollout/staleness"] == 1.0 for r in rows_a[2:])
    for step in range(1, 7):
        assert step_samples(run_dir, step) == step_samples(full["run_dir"], step)  # same prompts, same completions
        for key in COMPARED:
            assert rows_b[step][key] == pytest.approx(rows_a[step][key], rel=1e-4, abs=1e-6), (step, key)
    expected = expected_prompts(["trainer.total_steps=6"], 6, warm_model_dir)
    assert [step_prompts(run_dir, s, 8) for s in range(1, 7)] == expected
    from safetensors.torch import load_file

    final_a = load_file(os.path.join(full["checkpoint"], "model.safetensors"))
    final_b = load_file(os.path.join(run_dir, "checkpoints", "final", "model.safetensors"))
    assert max((final_a[k] - final_b[k]).abs().max().item() for k in final_a) < 1e-5
