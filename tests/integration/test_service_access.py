"""Who may read the status service, over real HTTP: the token for reads on a non-loopback bind,
`public_read`, the refusal to serve every run to the network without a token, and the
Host-header allow-list (DNS rebinding)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import httpx
import pytest

from rlvr.config import load_recipe
from rlvr.config.checks import RecipeError
from rlvr.run.status import RunStatus
from rlvr.service.access import ServiceRefused, allowed_host_names, host_name, is_loopback
from rlvr.service.server import start_in_thread

TOKEN = "read-and-control-token"
BIN = os.path.dirname(sys.executable)
READS = ["/api/v1/runs", "/api/v1/runs/r1", "/api/v1/runs/r1/metrics", "/api/v1/runs/r1/samples", "/metrics",
         "/api/v1/runs/nope", "/api/v2/anything"]
OPEN = ["/healthz", "/", "/static/app.js", "/openapi.json"]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    status = RunStatus(str(runs / "r1"), "r1", total_steps=3)
    status.update(state="running", step=1)
    with open(runs / "r1" / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"step": 1, "reward/mean": 0.5}) + "\n")
    return str(runs)


@pytest.fixture(scope="module")
def wide(runs_dir):
    """A server bound to every interface (0.0.0.0) with a token: reads need it."""
    handle = start_in_thread(runs_dir, "0.0.0.0", 0, TOKEN)
    with httpx.Client(base_url=f"http://127.0.0.1:{handle.port}", timeout=10) as client:
        yield client
    handle.stop()


def _auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", READS)
def test_reads_need_the_token_on_a_non_loopback_bind(wide, path):
    for headers in ({}, _auth("wrong"), {"Authorization": TOKEN}):
        r = wide.get(path, headers=headers)
        assert r.status_code == 401, (path, headers, r.text)
        assert "token" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
    assert wide.get(path, headers=_auth()).status_code in (200, 404)


def test_with_the_token_reads_work_and_say_so(wide):
    body = wide.get("/api/v1/runs", headers=_auth()).json()
    assert [r["run"] for r in body["runs"]] == ["r1"] and body["reads_need_token"] is True
    assert wide.get("/api/v1/runs/r1/metrics", headers=_auth()).json()["metrics"][0]["reward/mean"] == 0.5
    assert "rlvr_up 1" in wide.get("/metrics", headers=_auth()).text


@pytest.mark.parametrize("path", OPEN)
def test_health_and_the_dashboard_page_stay_open(wide, path):
    assert wide.get(path).status_code == 200


def test_control_still_needs_the_token(wide):
    assert wide.post("/api/v1/runs/r1/pause").status_code == 401
    assert wide.post("/api/v1/runs/r1/pause", headers=_auth()).status_code == 202


def test_a_non_loopback_bind_without_a_token_is_refused(runs_dir):
    with pytest.raises(ServiceRefused, match="public_read"):
        start_in_thread(runs_dir, "0.0.0.0", 0, None)


def test_public_read_opens_reads_with_one_warning(runs_dir, capsys):
    handle = start_in_thread(runs_dir, "0.0.0.0", 0, None, public_read=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{handle.port}", timeout=10) as client:
            for path in READS[:5]:
                assert client.get(path).status_code == 200, path
            assert client.get("/api/v1/runs").json()["reads_need_token"] is False
            assert client.post("/api/v1/runs/r1/pause").status_code == 403  # no token: control stays off
    finally:
        handle.stop()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "public_read" in warnings[0] and "anyone" in warnings[0]


def test_loopback_reads_stay_open(runs_dir, capsys):
    handle = start_in_thread(runs_dir, "127.0.0.1", 0, TOKEN)
    try:
        with httpx.Client(base_url=handle.url, timeout=10) as client:
            for path in READS[:5]:
                assert client.get(path).status_code == 200, path
            assert client.get("/api/v1/runs").json()["reads_need_token"] is False
    finally:
        handle.stop()
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8777", "127.0.0.1.nip.io", "localhost.evil.example",
                                  "10.9.8.7", "", "[::2]:80"])
def test_other_host_headers_are_rejected(runs_dir, host):
    handle = start_in_thread(runs_dir, "127.0.0.1", 0, TOKEN)
    try:
        with httpx.Client(base_url=handle.url, timeout=10) as client:
            for path in ("/api/v1/runs", "/healthz", "/", "/metrics"):
                r = client.get(path, headers={"Host": host})
                assert r.status_code == 400, (host, path, r.status_code)
                assert r.text.count("\n") == 1 and "allowed_hosts" in r.json()["detail"]
            assert client.post("/api/v1/runs/r1/pause", headers={"Host": host, **_auth()}).status_code == 400
    finally:
        handle.stop()


def test_allowed_host_names_and_extra_names(runs_dir):
    handle = start_in_thread(runs_dir, "127.0.0.1", 0, TOKEN, allowed_hosts=["runs.example.org"])
    try:
        with httpx.Client(base_url=handle.url, timeout=10) as client:
            for host in ("localhost", f"localhost:{handle.port}", "127.0.0.1:1", "[::1]:8777", "LOCALHOST",
                         "runs.example.org", "runs.example.org:443"):
                assert client.get("/api/v1/runs", headers={"Host": host}).status_code == 200, host
            assert client.get("/api/v1/runs", headers={"Host": "other.example.org"}).status_code == 400
    finally:
        handle.stop()
    anyone = start_in_thread(runs_dir, "127.0.0.1", 0, None, allowed_hosts=["*"])
    try:
        assert httpx.get(f"{anyone.url}/healthz", headers={"Host": "whatever.example"}, timeout=10).status_code == 200
    finally:
        anyone.stop()


def test_access_helpers():
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "0.0.0.0", "::", "192.168.1.2")] == \
        [True, True, True, True, False, False, False]
    assert host_name("[::1]:8777") == "::1" and host_name("Example.ORG.:80") == "example.org"
    assert allowed_host_names("10.1.2.3") >= {"10.1.2.3", "localhost", "127.0.0.1", "::1"}
    assert socket.gethostname().lower() in allowed_host_names("0.0.0.0")
    assert "fe80::1" in allowed_host_names("fe80::1")


def test_recipe_keys(tmp_path):
    cfg = load_recipe(None, ["service.public_read=true", "service.allowed_hosts=[runs.example.org,'*']"])
    assert cfg.service.public_read is True and cfg.service.allowed_hosts == ["runs.example.org", "*"]
    assert load_recipe(None, []).service.public_read is False
    with pytest.raises(RecipeError, match="service.allowed_hosts"):
        load_recipe(None, ["service.allowed_hosts=['evil example/x']"])
    with pytest.raises(RecipeError, match="public_read"):
        load_recipe(None, ["service.public_read=maybe"])


def test_rlvr_serve_refuses_a_wide_bind_without_a_token(runs_dir):
    env = {k: v for k, v in os.environ.items() if k != "RLVR_TOKEN"}
    out = subprocess.run([os.path.join(BIN, "rlvr"), "serve", "--runs-dir", runs_dir, "--host", "0.0.0.0",
                          "--port", "0"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2 and "--public-read" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_rlvr_status_sends_the_token(runs_dir):
    handle = start_in_thread(runs_dir, "0.0.0.0", 0, TOKEN)
    url = f"http://127.0.0.1:{handle.port}"
    try:
        env = {k: v for k, v in os.environ.items() if k != "RLVR_TOKEN"}
        run = [os.path.join(BIN, "rlvr"), "status", "--url", url]
        denied = subprocess.run(run, capture_output=True, text=True, timeout=60, env=env)
        assert denied.returncode == 1 and "401" in denied.stderr and "RLVR_TOKEN" in denied.stderr
        shown = subprocess.run(run, capture_output=True, text=True, timeout=60, env=dict(env, RLVR_TOKEN=TOKEN))
        assert shown.returncode == 0 and "r1" in shown.stdout, shown.stderr
    finally:
        handle.stop()
