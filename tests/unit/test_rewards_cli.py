"""Reward plugin tooling: `rlvr rewards list|check|score`, the conformance kit, and the
`length` and `http` built-ins (called directly and through their doctests)."""

from __future__ import annotations

import doctest
import http.server
import importlib
import json
import threading
import time

import pytest

from rlvr.reward.conformance import check_verifier, format_table
from rlvr.cli.rewards import main, parse_options
from rlvr.types import RewardInput

BAD = "tests.helpers.bad_verifiers"


def hangs_on_huge(sample: RewardInput) -> float:
    """Fine on small inputs, hangs on long ones: only the worker's kill stops it."""
    while len(sample.completion) > 100_000:
        time.sleep(60)
    return 1.0


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


# ---- the command line ----

def test_list_shows_builtins(capsys):
    code, out = run(capsys, "list")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "rlvr.reward.builtin.math:MathVerifier" in rows["math"] and "rlvr 0.1.0" in rows["math"]
    assert "rlvr.reward.builtin.format:FormatVerifier" in rows["format"]


def test_score_prints_json(capsys):
    code, out = run(capsys, "score", "math", "--completion", "<think>6*7</think> \\boxed{42}", "--answer", "42")
    assert code == 0
    assert json.loads(out) == {"value": 1.0, "parts": {"answer_found": 1.0, "correct": 1.0}, "failure": None}


def test_score_passes_yaml_options(capsys):
    code, out = run(capsys, "score", "rlvr.reward.builtin.length:LengthVerifier", "--completion", "abcdefgh", "--answer", "",
                    "-o", "max_length=10", "--option", "cache_length=4")
    assert code == 0 and json.loads(out)["value"] == -0.5  # (10 - 4 - 8) / 4


def test_score_kills_a_hanging_verifier_after_its_timeout(capsys):
    t0 = time.monotonic()
    code, out = run(capsys, "score", "tests.helpers.bad_verifiers:chaos", "--completion", "hang", "--answer", "1",
                    "--timeout-s", "1")
    assert time.monotonic() - t0 < 10
    assert code == 1
    result = json.loads(out)
    assert result["failure"].startswith("timeout: no answer after 1 s") and result["value"] == 0.0


def test_score_bad_options_are_a_usage_error(capsys):
    assert main(["score", "length", "--completion", "1", "--answer", "1", "-o", "max_length=-3"]) == 2
    assert "max_length" in capsys.readouterr().err


def test_score_unknown_name_is_a_usage_error(capsys):
    assert main(["score", "no_such_verifier", "--completion", "1", "--answer", "1"]) == 2
    assert "unknown verifier 'no_such_verifier'" in capsys.readouterr().err


@pytest.mark.parametrize("name, options", [("math", []), ("format", ["-o", "pattern=[0-9]+"])])
def test_check_passes_for_builtins(capsys, name, options):
    code, out = run(capsys, "check", name, *options, "--timing-samples", "5")
    assert code == 0, out
    assert "FAIL" not in out and "10/11 passed, 1 skipped" in out  # `expected` needs --samples


@pytest.mark.parametrize("name, options, failing", [
    (f"{BAD}:Constant", ["-o", "value=.nan"], "finite"),
    (f"{BAD}:FailsToLoad", [], "loads"),
])
def test_check_fails_for_broken_verifiers(capsys, name, options, failing):
    code, out = run(capsys, "check", name, *options, "--timing-samples", "3")
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith(failing + " "))
    assert "FAIL" in row


def test_parse_options():
    assert parse_options(["n=3", "x=0.5", "flag=false", "s=abc", "h={A: b}"]) == \
        {"n": 3, "x": 0.5, "flag": False, "s": "abc", "h": {"A": "b"}}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_options(["novalue"])


# ---- the conformance kit ----

def test_conformance_catches_a_hang():
    results = check_verifier(f"{__name__}:hangs_on_huge", timeout_s=0.5, n_timing=3)
    by_name = {r.name: r for r in results}
    assert by_name["returns_score"].passed and by_name["empty"].passed
    assert not by_name["huge"].passed and "verifier process" in by_name["huge"].detail
    assert not by_name["no_crash_or_hang"].passed
    table = format_table(results)
    assert "FAIL" in table and "2 FAILED" in table


def test_conformance_latency_limit():
    results = check_verifier("format", n_timing=3, max_ms=0.0)
    assert [r.name for r in results if r.failed] == ["latency"]


# ---- length ----

def test_length_penalty_shape():
    from rlvr.reward.builtin.length import LengthVerifier

    check = LengthVerifier(max_length=100, cache_length=20)
    values = [check(RewardInput("", "x" * n, "")).value for n in (0, 80, 90, 100, 101, 10_000)]
    assert values == [0.0, 0.0, -0.5, -1.0, -1.0, -1.0]  # (80 - 90) / 20 = -0.5
    words = LengthVerifier(max_length=4, cache_length=2, unit="words")
    assert words(RewardInput("", "a  b\nc", "")).value == -0.5  # 3 words: (2 - 3) / 2


@pytest.mark.parametrize("options, error", [
    ({}, TypeError), ({"max_length": 0}, TypeError), ({"max_length": 10, "cache_length": 10}, ValueError),
    ({"max_length": 10, "unit": "tokens"}, ValueError),
])
def test_length_rejects_bad_options(options, error):
    from rlvr.reward.builtin.length import LengthVerifier

    with pytest.raises(error):
        LengthVerifier(**options)


# ---- http ----

class _Handler(http.server.BaseHTTPRequestHandler):
    replies: list = []  # (status, body) to send, one per request
    seen: list = []

    def do_POST(self):  # noqa: N802
        self.seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        status, body = self.replies.pop(0) if self.replies else (200, b'{"score": 1}')
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/score"
    srv.shutdown()


@pytest.mark.parametrize("replies, value, failure, requests", [
    ([(200, b'{"score": 0.75, "parts": {"tests_passed": 3}}')], 0.75, None, 1),
    ([(503, b"busy"), (200, b'{"score": 1}')], 1.0, None, 2),  # 5xx: retried
    ([(404, b"no")], 0.0, "HTTP 404", 1),  # 4xx: not retried
    ([(200, b"<html>")], 0.0, "not JSON", 1),
    ([(200, b'{"score": "high"}')], 0.0, "no finite number", 1),
    ([(500, b"")] * 3, 0.0, "failed after 3 tries", 3),
])
def test_http_verifier(server, monkeypatch, replies, value, failure, requests):
    import rlvr.reward.builtin.http as mod

    monkeypatch.setattr(mod, "BACKOFF_S", 0.0)
    _Handler.replies, _Handler.seen = list(replies), []
    check = mod.HttpVerifier(url=server, timeout_s=2, retries=2, headers={"X-Token": "t"})
    score = check(RewardInput("p", "c \ud800", "a", {"id": 7}))
    assert score.value == value
    assert (score.failure is None) if failure is None else (failure in score.failure)
    assert len(_Handler.seen) == requests
    assert _Handler.seen[0] == {"prompt": "p", "completion": "c \ud800", "answer": "a", "metadata": {"id": 7}}
    if value == 0.75:
        assert score.parts == {"tests_passed": 3.0}


def test_http_rejects_bad_options():
    from rlvr.reward.builtin.http import HttpVerifier

    for options in ({"url": "ftp://x"}, {"url": "http://x", "timeout_s": 0}, {"url": "http://x", "retries": -1},
                    {"url": "http://x", "headers": {"a": 1}}):
        with pytest.raises((TypeError, ValueError)):
            HttpVerifier(**options)


@pytest.mark.parametrize("module", ["rlvr.reward.builtin.length", "rlvr.reward.builtin.http", "rlvr.cli.rewards",
                                    "rlvr.reward.samples", "rlvr.reward.catalog", "rlvr.reward.scaffold"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
