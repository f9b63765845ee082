"""Read back what the metric sinks wrote, with each tool's own reader where it has one."""

from __future__ import annotations

import glob
import json
import os
import struct


def tensorboard_scalars(run_dir: str, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(run_dir, "tensorboard"))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def mlflow_history(run_dir: str, key: str) -> tuple[str, dict[int, float]]:
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    with open(os.path.join(run_dir, "sinks.json")) as f:
        run_id = json.load(f)["mlflow"]
    client = MlflowClient(tracking_uri="file:" + os.path.abspath(os.path.join(run_dir, "mlruns")))
    from rlvr.run.sinks import mlflow_name

    return run_id, {m.step: m.value for m in client.get_metric_history(run_id, mlflow_name(key, file_store=True))}


def wandb_offline_history(run_dir: str) -> tuple[list[str], list[dict]]:
    """(offline run folders, history rows) from the `.wandb` files: a LevelDB-style log
    (7-byte header ":W&B" + magic + version; 32 KiB blocks of records with a
    crc32/length/type header) of `wandb_internal_pb2.Record` protobufs. wandb 0.31 ships no
    reader for it, so this small one parses the documented LevelDB log layout."""
    from wandb.proto import wandb_internal_pb2 as pb

    folders = sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*")))
    rows = []
    for path in sorted(glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))):
        with open(path, "rb") as f:
            data = f.read()
        assert data[:4] == b":W&B", path
        pos, block, pending = 7, 32768, b""
        while pos + 7 <= len(data):
            room = block - pos % block
            if room < 7:  # block trailer: padding
                pos += room
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            payload = data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind == 0 and length == 0:
                break
            pending += payload
            if kind in (1, 4):  # FULL or LAST
                record = pb.Record()
                record.ParseFromString(pending)
                pending = b""
                if record.WhichOneof("record_type") == "history":
                    rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                                 for i in record.history.item})
    return folders, rows
