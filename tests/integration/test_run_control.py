"""A real training run served over HTTP by its own driver: status, samples and Prometheus
while it trains, then pause / checkpoint / resume / stop through the control API."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request

import pytest

from rlvr.run.status import read_status
from tests.helpers.runs import run_short
from tests.helpers.procs import wait_for

pytestmark = pytest.mark.timeout(600)
TOKEN = "s3cret-test-token"


def http(url: str, method: str = "GET", token: str | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            body = reply.read().decode()
            code = reply.status
    except urllib.error.HTTPError as e:
        body, code = e.read().decode(), e.code
    try:
        return code, json.loads(body)
    except ValueError:
        return code, body


def test_driver_serves_its_run_and_obeys_control(ray_cluster, warm_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_CTL_TOKEN", TOKEN)
    result: dict = {}

    def train():
        try:
            result["summary"] = run_short(tmp_path, "ctl", [
                "service.enabled=true", "service.port=0", "service.token_env=RLVR_CTL_TOKEN", "service.heartbeat_s=1",
                "trainer.total_steps=500", "eval.every=0", "eval.num_prompts=8", "logging.samples_per_step=16"])
        except BaseException as e:  # surfaced by the assertions below
            result["error"] = e

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    run_dir = os.path.join(tmp_path, "ctl")

    def status() -> dict:
        assert "error" not in result, result.get("error")
        return read_status(run_dir) if os.path.exists(os.path.join(run_dir, "status.json")) else {}

    wait_for(lambda: status().get("step", 0) >= 2, "step 2")
    url = status()["service_url"]
    api = f"{url}/api/v1/runs/ctl"

    code, run = http(api)
    assert code == 200 and run["state"] == "running" and run["total_steps"] == 500
    assert set(run["last_step_timings"]) >= {"timing/generate", "timing/reward", "timing/train", "timing/sync"}
    code, samples = http(f"{api}/samples?limit=4")
    assert code == 200 and len(samples["samples"]) == 4
    row = samples["samples"][0]
    assert row["reward"] == pytest.approx(sum(row["scores"].values()))  # default: one verifier, weight 1
    assert row["prompt"] and row["answer"] and isinstance(row["advantage"], float)
    code, text = http(f"{url}/metrics")
    assert code == 200 and 'rlvr_step{run="ctl"}' in text

    # control: refused without the token, obeyed with it
    assert http(f"{api}/pause", "POST")[0] == 401
    assert http(f"{api}/pause", "POST", token="wrong")[0] == 401
    assert http(f"{api}/pause", "POST", token=TOKEN)[0] == 202
    wait_for(lambda: status().get("state") == "paused", "paused")
    paused_at = status()["step"]
    time.sleep(3)  # heartbeats continue: paused, not stale, and no step is taken
    assert status()["state"] == "paused" and status()["step"] == paused_at

    assert http(f"{api}/checkpoint", "POST", token=TOKEN)[0] == 202
    ckpt = os.path.join(run_dir, "checkpoints", f"step_{paused_at:06d}")
    wait_for(lambda: os.path.exists(os.path.join(ckpt, "model.safetensors")), "checkpoint")
    assert json.load(open(os.path.join(ckpt, "rlvr_state.json")))["step"] == paused_at

    assert http(f"{api}/resume", "POST", token=TOKEN)[0] == 202
    wait_for(lambda: status().get("step", 0) > paused_at, "a step after resume")

    assert http(f"{api}/stop", "POST", token=TOKEN)[0] == 202
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary["stopped_at"] is not None and summary["stopped_at"] < 500
    assert os.path.exists(os.path.join(summary["checkpoint"], "model.safetensors"))
    final = read_status(run_dir)
    assert final["state"] == "stopped" and final["step"] == summary["stopped_at"]
    with pytest.raises(OSError):  # the driver's server went away with the run
        urllib.request.urlopen(f"{url}/healthz", timeout=5)
