"""A short real training run with every metric sink on: TensorBoard event files, a wandb offline
run folder and an MLflow file-store run, read back and compared with metrics.jsonl."""

from __future__ import annotations

import pytest

from rlvr.metrics import read_metrics
from tests.e2e.test_learning import run_short
from tests.helpers.tracking import mlflow_history, tensorboard_scalars, wandb_offline_history

pytestmark = pytest.mark.timeout(600)


def test_short_run_feeds_tensorboard_wandb_and_mlflow(ray_cluster, warm_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network here; the recipe's default mode is offline too
    summary = run_short(tmp_path, "tracked", ["trainer.total_steps=3", "eval.every=0", "eval.num_prompts=16",
                                              "logging.sinks=[tensorboard,wandb,mlflow]", "logging.plots=false"])
    run = summary["run_dir"]
    rows = read_metrics(run)
    for key in ("reward/mean", "loss", "timing/step"):
        want = {r["step"]: r[key] for r in rows if r.get(key) is not None}
        assert sorted(want) == [1, 2, 3]
        assert tensorboard_scalars(run, key) == pytest.approx(want, rel=1e-6)
        assert mlflow_history(run, key)[1] == pytest.approx(want, rel=1e-6)
    evals = {r["step"]: r["eval/accuracy"] for r in rows if r.get("eval/accuracy") is not None}
    assert tensorboard_scalars(run, "eval/accuracy") == pytest.approx(evals)  # step 0 and the final eval
    folders, history = wandb_offline_history(run)
    assert len(folders) == 1
    assert {h["_step"]: h["reward/mean"] for h in history if "reward/mean" in h} == pytest.approx(
        {r["step"]: r["reward/mean"] for r in rows if "reward/mean" in r})
