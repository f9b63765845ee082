"""Fuzz the status service over real HTTP: a runs folder full of broken and hostile run folders,
every route of the app (listed from the app itself, so a new endpoint is covered without
touching this file) with good and malformed run names, query strings, headers and bodies.
No request may answer 5xx or take more than a few seconds, and the server's memory must not
keep growing."""

from __future__ import annotations

import json
import os
import random
import socket
import time

import httpx
import pytest

from rlvr.service.server import start_in_thread

TOKEN = "fuzz-token"
MAX_SECONDS = 5.0
FRESH = time.time() + 1e6  # a heartbeat from the future: the run reads as alive for the whole test
BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f'{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n' for p, c in zip("abcdefgh", "bcdefghi"))


def _status(**fields) -> str:
    return json.dumps({"run_name": "x", "state": "running", "step": 1, "total_steps": 2, "heartbeat": FRESH,
                       "hostname": "elsewhere", "pid": 1, **fields})


def _write(path, content) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)


def _fifo(path) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkfifo(path)


def _files(rng: random.Random) -> dict:
    """Run folder name -> {relative path: text, bytes, "FIFO", "DIR", ("LINK", target)}."""
    junk = bytes(rng.randrange(256) for _ in range(4096))
    deep = "[" * 200_000
    return {
        "wrong-types": {"status.json": json.dumps({"state": 5, "step": "x", "heartbeat": "now", "heartbeat_s": [],
                                                   "latest_metrics": [1, 2], "reward_failures": "lots",
                                                   "checkpoints": {}, "pid": -1, "started_at": "yesterday",
                                                   "hostname": socket.gethostname(), "total_steps": {"a": 1}}),
                        "metrics.jsonl": '[1]\n"x"\n{"step": "one"}\n{"step": null}\n{"step": [1]}\n'},
        "huge-numbers": {"status.json": '{"state": "running", "step": 1e400, "pid": 99999999999999999999999999, '
                                        '"heartbeat": -1e308, "heartbeat_s": 1e999, "started_at": 1e308, '
                                        '"latest_metrics": {"a": 1e999, "b": -1e999, "c": 123456789012345678901234567890}}',
                         "metrics.jsonl": '{"step": 1e400}\n{"step": 99999999999999999999999999999, "x": 1e999}\n'},
        "nan": {"status.json": _status(step=float("nan"), latest_metrics={"loss": float("nan"), "kl": float("inf")}),
                "metrics.jsonl": '{"step": NaN}\n{"step": 1, "loss": Infinity, "kl": -Infinity}\n'},
        "nested": {"status.json": '{"a":' * 100_000 + "1" + "}" * 100_000, "metrics.jsonl": deep + "\n" + deep,
                   "recipe.yaml": deep},
        "binary": {"status.json": junk, "metrics.jsonl": junk, "recipe.yaml": junk,
                   "samples/step_000001.jsonl": junk},
        "fifo-status": {"status.json": "FIFO", "metrics.jsonl": '{"step": 1}\n'},
        "fifo-metrics": {"status.json": _status(), "metrics.jsonl": "FIFO"},
        "fifo-everything": {"status.json": _status(), "metrics.jsonl": '{"step": 1}\n', "recipe.yaml": "FIFO",
                            "samples/step_000001.jsonl": "FIFO", "checkpoints/final/manifest.json": "FIFO",
                            "checkpoints/step_000001/run_state.json": "FIFO"},
        "links-out": {"status.json": ("LINK", "/etc/hostname"), "metrics.jsonl": ("LINK", "/dev/zero"),
                      "recipe.yaml": ("LINK", "/etc/passwd"), "samples": ("LINK", "/etc")},
        "yaml-bomb": {"status.json": _status(), "recipe.yaml": BOMB},
        "truncated": {"status.json": '{"state": "runn', "metrics.jsonl": '{"step": 1}\n{"step": 2, "lo',
                      "recipe.yaml": "trainer: {total_steps: "},
        "non-utf8": {"status.json": b'{"state": "running", "run_name": "\xff\xfe", "heartbeat": 1e12}',
                     "metrics.jsonl": b'{"step": 1, "k\xe9y": "\xff"}\n\xc3\x28\n',
                     "recipe.yaml": b"run: {name: \xff\xfe}\n", "samples/step_000001.jsonl": b'{"prompt": "\xff"}\n'},
        "empty": {"status.json": "", "metrics.jsonl": "", "recipe.yaml": "", "samples/step_000001.jsonl": ""},
        "dirs": {"status.json": _status(), "metrics.jsonl": "DIR", "recipe.yaml": "DIR", "samples/step_000002.jsonl": "DIR",
                 "control": b"not a folder", "checkpoints": b"not a folder"},
        "all-dirs": {"status.json": "DIR", "metrics.jsonl": "DIR"},
        "long-line": {"status.json": _status(), "metrics.jsonl": "x" * (3 << 20) + '\n{"step": 5}\n' + "y" * (3 << 20)},
        "junk-samples": {"status.json": _status(), "samples/step_000003.jsonl": '{"a": 1}\n[[[\n' * 1000,
                         "samples/step_999999999999999999.jsonl": "{}\n", "samples/step_.jsonl": "{}\n"},
        "many-rows": {"status.json": _status(),
                      "metrics.jsonl": "".join(json.dumps({"step": i, "loss": 0.1}) + "\n" for i in range(30_000))},
        "ok": {"status.json": _status(), "metrics.jsonl": '{"step": 1, "reward/mean": 0.5}\n'},
    }


def _build(runs, outside) -> list[str]:
    rng = random.Random(0)
    for name, files in _files(rng).items():
        os.makedirs(runs / name)
        for rel, content in files.items():
            path = str(runs / name / rel)
            if content == "FIFO":
                _fifo(path)
            elif content == "DIR":
                os.makedirs(path)
            elif isinstance(content, tuple):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.symlink(content[1], path)
            else:
                _write(path, content)
    _write(str(outside / "secret" / "status.json"), _status())
    os.symlink(outside / "secret", runs / "symlink-out")  # a run folder leaving the runs folder
    os.symlink(runs / "loop", runs / "loop")  # a symlink loop
    _fifo(str(runs / "a-fifo"))
    _write(str(runs / "a-file"), "x")
    _write(str(runs / ".hidden" / "status.json"), _status())
    return sorted(os.listdir(runs))


BAD_NAMES = ["..", "%2e%2e", "%2E%2E%2F%2E%2E", "..%2F..%2Fetc", "%00", "a%00b", "x" * 300, "y" * 5000, "%ff%fe",
             "\u00e9t\u00e9", "nope", ".hidden", "a-fifo", "a-file", "loop", "symlink-out", "%20", "a b"]
QUERIES = ["", "?since=abc", "?since=1e400", "?since=-99999999999999999999999999", "?since=&step=&limit=",
           "?step=x&limit=0", "?limit=99999999999", "?step=-1", "?step=3&limit=1", "?since=" + "9" * 5000,
           "?a=%ff&b=%00"]
BODIES = [None, b"{", b"\xff\xfe", b'{"action": "stop"}' * 1000, json.dumps({"a": [[[[[1]]]]]}).encode()]
HEADERS = [{}, {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer wrong"},
           {"Authorization": "Basic " + "x" * 8000}, {"Content-Type": "application/json"}, {"Host": "evil.example"}]


def _routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every route and mount of the app."""
    out = []
    for route in app.routes:
        methods = sorted(getattr(route, "methods", None) or {"GET"})
        out.extend((m, route.path) for m in methods if m != "HEAD")
    assert any("{run}" in p for _, p in out) and any(m == "POST" for m, _ in out)
    return out


def _paths(template: str, names: list[str]) -> list[str]:
    if "{run}" in template:
        return [template.replace("{run}", n) for n in names]
    if template.startswith("/static"):
        return [f"/static/{n}" for n in ("app.js", "../app.py", "%2e%2e/app.py", "nope.js", "", "x" * 3000)]
    return [template]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    runs, outside = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("outside")
    names = _build(runs, outside)
    handle = start_in_thread(str(runs), "127.0.0.1", 0, TOKEN)
    yield handle, names
    handle.stop()


def _requests(app, names: list[str]):
    rng = random.Random(1)
    for method, template in _routes(app):
        for path in _paths(template, names + BAD_NAMES):
            yield method, path, "", None, HEADERS[1]
            for _ in range(2):  # a random sample of the malformed variants per path
                body = rng.choice(BODIES) if method == "POST" else None
                yield method, path, rng.choice(QUERIES), body, rng.choice(HEADERS)


def _hit(client: httpx.Client, method, path, query, body, headers) -> int:
    start = time.monotonic()
    try:
        r = client.request(method, path + query, content=body, headers=headers)
    except httpx.TimeoutException:
        pytest.fail(f"{method} {path[:120]}{query[:60]} hung (> {MAX_SECONDS} s)")
    elapsed = time.monotonic() - start
    assert r.status_code < 500, (method, path[:120], query[:60], r.status_code, r.text[:300])
    assert elapsed < MAX_SECONDS, (method, path[:120], query[:60], elapsed)
    return r.status_code


def test_every_route_survives_a_hostile_runs_folder(served):
    handle, names = served
    app = handle.server.config.app
    seen: dict[int, int] = {}
    with httpx.Client(base_url=handle.url, timeout=MAX_SECONDS + 5) as client:
        rows = {r["run"]: r for r in client.get("/api/v1/runs").json()["runs"]}
        assert "ok" in rows and "symlink-out" not in rows and "all-dirs" not in rows
        for request in _requests(app, names):
            code = _hit(client, *request)
            seen[code] = seen.get(code, 0) + 1
    assert seen.get(200, 0) > 50 and seen.get(404, 0) > 10, seen  # the fuzz reached real answers and refusals


def test_memory_does_not_grow_with_repeated_polls(served):
    handle, names = served
    with httpx.Client(base_url=handle.url, timeout=MAX_SECONDS + 5) as client:
        polls = [("GET", f"/api/v1/runs/{n}{suffix}", "", None, {}) for n in names
                 for suffix in ("", "/metrics", "/samples")] + [("GET", "/metrics", "", None, {})]
        for request in polls:  # warm-up: caches filled once
            _hit(client, *request)
        before = _rss_mb()
        for _ in range(5):
            for request in polls:
                _hit(client, *request)
        growth = _rss_mb() - before
    assert growth < 64, f"RSS grew {growth:.0f} MB over 5 rounds of polls"


def test_a_run_rewritten_under_the_cache_is_read_again(served):
    handle, _ = served
    with httpx.Client(base_url=handle.url, timeout=10) as client:
        runs_dir = client.get("/api/v1/runs").json()["runs_dir"]
        path = os.path.join(runs_dir, "ok", "metrics.jsonl")
        assert [r["step"] for r in client.get("/api/v1/runs/ok/metrics").json()["metrics"]] == [1]
        with open(path, "a") as f:
            f.write('{"step": 2}\n{"step": 3, "x"')
        assert [r["step"] for r in client.get("/api/v1/runs/ok/metrics").json()["metrics"]] == [1, 2]
        with open(path, "a") as f:
            f.write(": 1}\n")
        assert [r["step"] for r in client.get("/api/v1/runs/ok/metrics?since=1").json()["metrics"]] == [2, 3]
        _write(path + ".new", '{"step": 7}\n')
        os.replace(path + ".new", path)
        assert [r["step"] for r in client.get("/api/v1/runs/ok/metrics").json()["metrics"]] == [7]
        _write(path, "")
        assert client.get("/api/v1/runs/ok/metrics").json()["metrics"] == []
