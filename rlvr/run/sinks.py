"""Experiment-tracking sinks: every step's metrics go to `metrics.jsonl` (always; the run's
source of truth) and to the sinks the recipe lists in `logging.sinks`:

    tensorboard  torch.utils.tensorboard SummaryWriter, event files in <run>/tensorboard/
                 (`tensorboard --logdir runs`)
    wandb        Weights & Biases; `logging.wandb.mode: offline` (the default) writes
                 <run>/wandb/offline-run-*/ with no network (`wandb sync` uploads it later)
    mlflow       MLflow; the default tracking URI is a file store in <run>/mlruns
                 (MLflow 3 keeps the file store behind MLFLOW_ALLOW_FILE_STORE, which is set
                 for file: URIs; `mlflow ui --backend-store-uri <run>/mlruns`). On a file
                 store metric names use `.` for `/` (reward.mean), see MlflowSink.

Each sink gets the same numbers keyed by step; `None` values (JSON nulls, e.g. a NaN)
are left out. A resumed run continues the same wandb/MLflow run: their ids are kept in
<run>/sinks.json. A sink that raises is reported once and switched off: tracking never
fails a training run. Whether the packages are installed is checked with the recipe,
before anything starts (`rlvr.config.run.missing_packages`).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time

from rlvr.run.files import atomic_write_text

class _Ids:
    """<run>/sinks.json: the wandb/MLflow run ids, so a resumed run logs into the same run."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, "sinks.json")
        self.ids = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.ids = json.load(f)

    def save(self, key: str, value: str) -> None:
        self.ids[key] = value
        atomic_write_text(self.path, json.dumps(self.ids))


class TensorBoardSink:
    def __init__(self, run_dir: str, cfg, ids: _Ids):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=os.path.join(run_dir, "tensorboard"))

    def log(self, step: int, metrics: dict) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: str, cfg, ids: _Ids):
        import wandb

        w = cfg.wandb
        self.run = wandb.init(project=w.project, entity=w.entity, name=os.path.basename(os.path.normpath(run_dir)),
                              dir=os.path.abspath(run_dir), mode=w.mode, id=ids.ids.get("wandb"), resume="allow",
                              config={"run_dir": os.path.abspath(run_dir)}, settings=wandb.Settings(silent=True))
        ids.save("wandb", self.run.id)

    def log(self, step: int, metrics: dict) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def mlflow_name(key: str, file_store: bool) -> str:
    """MLflow accepts letters, digits, `_ - . : /` and spaces in names: `pass@4` -> `pass_at_4`, anything
    else -> `_`; on a file store also `/` -> `.` (see MlflowSink).

    >>> mlflow_name("eval/gsm8k/pass@4", True), mlflow_name("eval/gsm8k/pass@4", False)
    ('eval.gsm8k.pass_at_4', 'eval/gsm8k/pass_at_4')
    """
    key = re.sub(r"[^A-Za-z0-9_\-. :/]", "_", key.replace("@", "_at_"))
    return key.replace("/", ".") if file_store else key


class MlflowSink:
    def __init__(self, run_dir: str, cfg, ids: _Ids):
        uri = cfg.mlflow.tracking_uri or "file:" + os.path.abspath(os.path.join(run_dir, "mlruns"))
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        run_id = ids.ids.get("mlflow")
        if run_id is None:
            exp = self.client.get_experiment_by_name(cfg.mlflow.experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(cfg.mlflow.experiment)
            run_id = self.client.create_run(exp_id, run_name=os.path.basename(os.path.normpath(run_dir))).info.run_id
            ids.save("mlflow", run_id)
        self.run_id, self.uri = run_id, uri
        # The file store keeps each metric in a file named by its key, so `a/b` and `a/b/c`
        # (reward/math/failures and reward/math/failures/timeout) cannot both exist there:
        # on file stores `/` becomes `.` in MLflow's names. Database/HTTP stores keep `/`.
        file_store = uri.startswith("file:")
        self.rename = lambda key: mlflow_name(key, file_store)

    def log(self, step: int, metrics: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(self.rename(key), float(value), now, step) for key, value in metrics.items()]
        for i in range(0, len(batch), 1000):  # MLflow's log_batch limit
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink, "mlflow": MlflowSink}


class Sinks:
    """The recipe's sinks for one run; `log(metrics)` with the step in `metrics["step"]`."""

    def __init__(self, run_dir: str, logging_cfg):
        ids = _Ids(run_dir)
        self.sinks = {name: SINKS[name](run_dir, logging_cfg, ids) for name in logging_cfg.sinks}

    def log(self, metrics: dict) -> None:
        step = int(metrics.get("step", 0))
        numbers = {k: float(v) for k, v in metrics.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        for name, sink in list(self.sinks.items()):
            try:
                sink.log(step, numbers)
            except Exception as e:  # noqa: BLE001 - tracking never fails a run
                print(f"[rlvr] warning: metrics sink {name} failed and is switched off: {type(e).__name__}: {e}",
                      file=sys.stderr, flush=True)
                self.sinks.pop(name)

    def close(self) -> None:
        for name, sink in self.sinks.items():
            try:
                sink.close()
            except Exception as e:  # noqa: BLE001
                print(f"[rlvr] warning: closing metrics sink {name}: {type(e).__name__}: {e}", file=sys.stderr)
