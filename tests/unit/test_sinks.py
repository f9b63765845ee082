"""Metric sinks written for real (TensorBoard event files, a wandb offline run, an MLflow file
store) and read back with each tool's reader; a resumed logger continues the same runs."""

from __future__ import annotations


import re

import pytest

from rlvr.config import LoggingConfig
from rlvr.run.metrics import MetricsLogger
from rlvr.run.sinks import Sinks
from tests.helpers.tracking import mlflow_history, tensorboard_scalars, wandb_offline_history

ALL = ["tensorboard", "wandb", "mlflow"]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def _log(run_dir: str, steps, append: bool = False):
    logger = MetricsLogger(run_dir, append=append, keep_until_step=steps[0] - 1 if append else None,
                           logging_cfg=LoggingConfig(sinks=ALL))
    for s in steps:
        logger.log({"step": s, "reward/mean": s / 10, "eval/accuracy": None, "loss": float("nan"), "flag": True,
                    "reward/math/failures": 0.0, "reward/math/failures/timeout": 0.0})  # a name inside another's
    logger.close()


def test_sinks_write_what_metrics_jsonl_has_and_resume_into_the_same_runs(tmp_path):
    run = str(tmp_path / "run")
    _log(run, [1, 2, 3])
    mlflow_id, _ = mlflow_history(run, "reward/mean")
    _log(run, [4, 5], append=True)  # a resumed run

    want = {s: s / 10 for s in range(1, 6)}
    assert tensorboard_scalars(run, "reward/mean") == pytest.approx(want)
    run_id, history = mlflow_history(run, "reward/mean")
    assert run_id == mlflow_id and history == pytest.approx(want)
    folders, rows = wandb_offline_history(run)
    # one wandb run id across the resume (a folder made in the same second gets a "-1" suffix)
    assert len({re.search(r"offline-run-\d{8}_\d{6}-([a-z0-9]+)", f).group(1) for f in folders}) == 1
    assert {r["_step"]: r["reward/mean"] for r in rows} == pytest.approx(want)
    assert all("loss" not in r and "eval/accuracy" not in r for r in rows)  # NaN and null are left out


def test_a_failing_sink_is_switched_off_not_fatal(tmp_path, capsys):
    class Broken:
        def log(self, step, metrics):
            raise OSError("disk full")

        def close(self):
            pass

    sinks = Sinks(str(tmp_path), LoggingConfig(sinks=["tensorboard"]))
    sinks.sinks["broken"] = Broken()
    sinks.log({"step": 1, "reward/mean": 0.5})
    sinks.log({"step": 2, "reward/mean": 0.6})
    sinks.close()
    assert list(sinks.sinks) == ["tensorboard"]
    assert capsys.readouterr().err.count("metrics sink broken failed") == 1
    assert tensorboard_scalars(str(tmp_path), "reward/mean") == pytest.approx({1: 0.5, 2: 0.6})
