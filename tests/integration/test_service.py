"""The status & control service over real HTTP: in-thread servers and `rlvr serve` / `rlvr status` subprocesses.

The runs folder is written with the same writers the driver uses (RunStatus,
write_samples, a metrics.jsonl), so this also checks the file contract end to end.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest

from rlvr.run.status import RunStatus
from rlvr.run.control import ControlInbox
from rlvr.run.samples import write_samples
from rlvr.service.server import resolve_token, start_in_thread

TOKEN = "s3cret-token"
BIN = os.path.dirname(sys.executable)
SAMPLE = {"step": 2, "prompt": "What is 2+3?", "completion": "<answer>5</answer>", "answer": "5",
          "reward": 1.0, "scores": {"math": 1.0, "format": 1.0}, "failures": {}, "advantage": 0.5,
          "length": 7, "finish_reason": "stop", "weight_version": 2}


def _write_metrics(run_dir: str, steps: int, torn: bool = False) -> None:
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 0, "eval/accuracy": 0.25}) + "\n")
        for step in range(1, steps + 1):
            f.write(json.dumps({"step": step, "reward/mean": 0.1 * step, "loss": -0.01 * step, "kl": 0.001,
                                "response_length/mean": 20.0 + step, "timing/generate": 1.0,
                                "timing/train": 0.5, "timing/step": 1.6, "weight_version": step}) + "\n")
        if torn:
            f.write('{"step": 99, "reward/me')


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    live = RunStatus(str(runs / "live"), "live", total_steps=10, heartbeat_s=0.5, ray_job_id="raysubmit_42")
    live.start_heartbeat()
    live.update(state="running", step=3, phase="generate", weight_version=2,
                last_step_timings={"timing/generate": 1.0, "timing/train": 0.5, "timing/step": 1.6},
                latest_metrics={"step": 2, "reward/mean": 0.2, "eval/pass@1": 0.5, "loss": float("nan")},
                reward_failures={"math/timeout": 3})
    _write_metrics(str(runs / "live"), 3, torn=True)
    write_samples(str(runs / "live"), 1, [dict(SAMPLE, step=1, prompt=f"q{i}") for i in range(4)])
    write_samples(str(runs / "live"), 2, [SAMPLE, dict(SAMPLE, reward=0.0, failures={"math": "no answer"})])

    done = RunStatus(str(runs / "done"), "done", total_steps=2)
    _write_metrics(str(runs / "done"), 2)
    done.update(state="running", step=2, phase="train")
    done.close("completed")

    crashed = RunStatus(str(runs / "crashed"), "crashed", total_steps=5)
    crashed.update(state="running")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(runs / "crashed" / "status.json") as f:
        status = json.load(f)
    with open(runs / "crashed" / "status.json", "w") as f:
        json.dump(dict(status, pid=dead.pid), f)

    (runs / "legacy").mkdir()
    _write_metrics(str(runs / "legacy"), 2)
    (runs / "legacy" / "checkpoints" / "final").mkdir(parents=True)
    yield str(runs)
    live.close("completed")


@pytest.fixture(scope="module")
def server(runs_dir):
    handle = start_in_thread(runs_dir, "127.0.0.1", 0, TOKEN)
    yield handle
    handle.stop()
    assert not handle.thread.is_alive()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_binds_a_real_port_and_refuses_a_busy_one(server):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url) and server.port != 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass
    with pytest.raises(OSError):
        start_in_thread("unused", "127.0.0.1", server.port, None)


def test_health_and_openapi(client):
    assert client.get("/healthz").json() == {"ok": True}
    paths = client.get("/openapi.json").json()["paths"]
    expected = {"/healthz", "/metrics", "/api/v1/runs", "/api/v1/runs/{run}", "/api/v1/runs/{run}/metrics",
                "/api/v1/runs/{run}/samples"} | {f"/api/v1/runs/{{run}}/{a}" for a in ("pause", "resume", "checkpoint", "stop")}
    assert expected <= set(paths)
    assert "post" in paths["/api/v1/runs/{run}/stop"]


def test_runs_list(client):
    body = client.get("/api/v1/runs").json()
    rows = {r["run"]: r for r in body["runs"]}
    assert set(rows) == {"live", "done", "crashed", "legacy"} and body["control"] is True
    assert {k: rows[k]["state"] for k in rows} == {"live": "running", "done": "completed", "crashed": "stale",
                                                   "legacy": "completed"}
    assert (rows["live"]["step"], rows["live"]["total_steps"]) == (3, 10)
    assert rows["live"]["heartbeat"] > time.time() - 30


def test_run_detail(client):
    d = client.get("/api/v1/runs/live").json()
    assert (d["state"], d["step"], d["total_steps"], d["phase"]) == ("running", 3, 10, "generate")
    assert (d["ray_job_id"], d["weight_version"], d["error"]) == ("raysubmit_42", 2, None)
    assert d["reward_failures"] == {"math/timeout": 3} and d["last_step_timings"]["timing/step"] == 1.6
    assert d["latest_metrics"]["loss"] is None and d["checkpoints"] == [] and d["recipe"] is None
    assert 0 <= d["heartbeat_age"] < 30
    legacy = client.get("/api/v1/runs/legacy").json()
    assert (legacy["state"], legacy["step"], legacy["checkpoints"]) == ("completed", 2, ["checkpoints/final"])
    for bad in ("nope", ".hidden", "..", "..%2F..%2Fetc"):
        assert client.get(f"/api/v1/runs/{bad}").status_code == 404, bad


def test_metrics_since(client):
    rows = client.get("/api/v1/runs/live/metrics").json()["metrics"]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]  # the torn step-99 line is skipped
    since = client.get("/api/v1/runs/live/metrics", params={"since": 1}).json()["metrics"]
    assert [r["step"] for r in since] == [2, 3] and since[0]["reward/mean"] == pytest.approx(0.2)
    assert client.get("/api/v1/runs/live/metrics", params={"since": 3}).json()["metrics"] == []
    assert client.get("/api/v1/runs/nope/metrics").status_code == 404


def test_samples(client):
    latest = client.get("/api/v1/runs/live/samples").json()
    assert (latest["step"], latest["steps"]) == (2, [1, 2])
    assert latest["samples"][0] == SAMPLE and latest["samples"][1]["failures"] == {"math": "no answer"}
    first = client.get("/api/v1/runs/live/samples", params={"step": 1, "limit": 2}).json()
    assert [s["prompt"] for s in first["samples"]] == ["q0", "q1"]
    assert client.get("/api/v1/runs/live/samples", params={"step": 5}).status_code == 404
    assert client.get("/api/v1/runs/done/samples").json() == {"run": "done", "step": None, "steps": [], "samples": []}


SAMPLE_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? '
                         r'(-?[0-9.]+(e[+-]?[0-9]+)?|NaN|[+-]Inf)$')


def test_prometheus_text(client):
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = response.text.strip().splitlines()
    samples = {}
    typed = set()
    for line in lines:
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter") and name not in typed
            typed.add(name)
        elif not line.startswith("#"):
            assert SAMPLE_LINE.match(line), line
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
            assert key.split("{")[0] in typed, line
    assert samples['rlvr_step{run="live"}'] == 3 and samples['rlvr_total_steps{run="live"}'] == 10
    assert samples['rlvr_reward_mean{run="live"}'] == pytest.approx(0.2)
    assert samples['rlvr_eval_pass_1{run="live"}'] == 0.5
    assert samples['rlvr_reward_failures_total{key="math/timeout",run="live"}'] == 3
    assert samples["rlvr_up"] == 1 and samples['rlvr_runs{state="stale"}'] == 1
    assert not any('run="done"' in k or 'run="crashed"' in k for k in samples)  # active runs only
    assert not any(k.startswith("rlvr_loss") for k in samples)  # NaN/null is left out


def test_dashboard_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {"static/app.js", "static/chart.js", "static/style.css"} <= set(assets)
    texts = [page.text]
    for asset in assets:
        response = client.get("/" + asset)
        assert response.status_code == 200, asset
        texts.append(response.text)
    for text in texts:  # no CDN, no external fonts: the machines have no internet
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    app_js = texts[assets.index("static/app.js") + 1]
    assert "api/v1/runs" in app_js and "sessionStorage" in app_js and "Bearer" in app_js


def test_control_needs_a_configured_token(runs_dir):
    open_server = start_in_thread(runs_dir, "127.0.0.1", 0, None)
    try:
        response = httpx.post(f"{open_server.url}/api/v1/runs/live/pause",
                              headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert response.status_code == 403 and "RLVR_TOKEN" in response.json()["detail"]
        assert httpx.get(f"{open_server.url}/api/v1/runs", timeout=10).json()["control"] is False
    finally:
        open_server.stop()
    assert ControlInbox(os.path.join(runs_dir, "live")).take() == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}])
def test_control_rejects_a_wrong_token_and_writes_nothing(client, runs_dir, headers):
    response = client.post("/api/v1/runs/live/stop", headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    control = os.path.join(runs_dir, "live", "control")
    assert not os.path.isdir(control) or os.listdir(control) == []


def test_control_with_the_token_reaches_the_inbox(client, runs_dir):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    inbox = ControlInbox(os.path.join(runs_dir, "live"))
    assert inbox.take() == []
    ids = []
    for action in ("pause", "checkpoint", "resume", "stop"):
        response = client.post(f"/api/v1/runs/live/{action}", headers=auth)
        assert response.status_code == 202 and response.json()["accepted"] == action
        ids.append(response.json()["id"])
    assert len(set(ids)) == 4
    assert inbox.take() == ["pause", "checkpoint", "resume", "stop"]
    assert inbox.take() == []


@pytest.mark.parametrize("run,code", [("done", 409), ("crashed", 409), ("legacy", 409), ("nope", 404)])
def test_control_of_a_run_that_is_not_active(client, runs_dir, run, code):
    response = client.post(f"/api/v1/runs/{run}/pause", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == code
    assert not os.path.exists(os.path.join(runs_dir, run, "control"))


def test_resolve_token(tmp_path, monkeypatch):
    monkeypatch.setenv("RLVR_TEST_TOKEN", "  from-env \n")
    assert resolve_token("RLVR_TEST_TOKEN", None) == "from-env"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert resolve_token("RLVR_TEST_TOKEN", str(token_file)) == "from-file"
    token_file.write_text("  \n")
    assert resolve_token("RLVR_TEST_TOKEN", str(token_file)) == "from-env"
    monkeypatch.setenv("RLVR_TEST_TOKEN", "")
    assert resolve_token("RLVR_TEST_TOKEN", str(token_file)) is None
    with pytest.raises(FileNotFoundError):
        resolve_token("RLVR_TEST_TOKEN", str(tmp_path / "missing"))


def _rlvr(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, "rlvr"), *args], capture_output=True, text=True, timeout=timeout)


def test_rlvr_serve_and_status_subprocesses(runs_dir):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, RLVR_TOKEN=TOKEN)
    proc = subprocess.Popen([os.path.join(BIN, "rlvr"), "serve", "--runs-dir", runs_dir, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).json() == {"ok": True}:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "rlvr serve did not answer /healthz"
            time.sleep(0.1)
        assert httpx.get(f"{url}/api/v1/runs", timeout=5).json()["control"] is True  # token from RLVR_TOKEN

        table = _rlvr("status", "--url", url)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["RUN", "STATE", "STEP", "PHASE", "HEARTBEAT"]
        assert any(line.split()[:3] == ["live", "running", "3/10"] for line in lines[1:]), table.stdout

        detail = _rlvr("status", "live", "--url", url)
        assert detail.returncode == 0, detail.stderr
        for needle in ("live  [running]", "3 / 10", "generate", "s ago", "generate 1.00s",
                       "reward/mean 0.2", "math/timeout 3", "raysubmit_42"):
            assert needle in detail.stdout, (needle, detail.stdout)

        missing = _rlvr("status", "nope", "--url", url)
        assert missing.returncode == 1 and "no run named 'nope'" in missing.stderr
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert url in out  # `rlvr serve` printed its URL


def test_rlvr_status_without_a_server(runs_dir):
    url = f"http://127.0.0.1:{_free_port()}"
    down = _rlvr("status", "--url", url)
    assert down.returncode == 1 and down.stdout == ""
    assert len(down.stderr.strip().splitlines()) == 1 and url in down.stderr and "rlvr serve" in down.stderr
    files = _rlvr("status", "--runs-dir", runs_dir)
    assert files.returncode == 0 and "legacy" in files.stdout and "stale" in files.stdout
    one = _rlvr("status", "done", "--runs-dir", runs_dir)
    assert one.returncode == 0 and "done  [completed]" in one.stdout and "2 / 2" in one.stdout
