"""Tools and their calls: the parsers, the built-in `calc` and `python`, and the tool worker with
tools that raise, hang, flood, exit or segfault (each fails only its own call, within its timeout)."""

from __future__ import annotations

import time

import pytest

from rlvr.cluster.isolated import GRACE_S
from rlvr.tools.builtin import Calc, Python
from rlvr.tools.calls import parse_hermes, parse_llama3_json, tool_schema
from rlvr.tools.worker import ToolWorker

CHAOS = "tests.helpers.bad_tools:Chaos"


# ---- parsers ----


def test_hermes_reads_every_call_of_a_turn_in_order():
    text = ('I will compute. <tool_call>\n{"name": "calc", "arguments": {"expression": "1+2"}}\n</tool_call>'
            '<tool_call>{"name": "python", "arguments": "{\\"code\\": \\"print(1)\\"}"}</tool_call> done')
    calls = parse_hermes(text)
    assert [(c.name, c.arguments, c.error) for c in calls] == [
        ("calc", {"expression": "1+2"}, None), ("python", {"code": "print(1)"}, None)]


@pytest.mark.parametrize("body, reason", [
    ('{"name": "calc", "arguments": {"expression": "1+2"}', "not valid JSON"),
    ('["calc"]', 'needs a "name"'),
    ('{"arguments": {}}', 'needs a "name"'),
    ('{"name": "calc", "arguments": [1, 2]}', "must be an object"),
    ('{"name": "calc", "arguments": "not json"}', "must be an object"),
])
def test_hermes_keeps_unreadable_calls_with_their_error(body, reason):
    [call] = parse_hermes(f"<tool_call>{body}</tool_call>")
    assert call.error.startswith("invalid: ") and reason in call.error
    assert call.raw == body


def test_hermes_ignores_turns_without_calls_and_unclosed_tags():
    assert parse_hermes("The answer is 42.") == []
    assert parse_hermes('<tool_call>{"name": "calc"') == []


def test_llama3_json_reads_python_tag_and_semicolon_separated_calls():
    text = '<|python_tag|>{"name": "calc", "parameters": {"expression": "2*3"}}; {"name": "python", "parameters": {"code": "x"}}'
    assert [(c.name, c.arguments) for c in parse_llama3_json(text)] == [
        ("calc", {"expression": "2*3"}), ("python", {"code": "x"})]
    assert parse_llama3_json("It is 6.") == []
    assert parse_llama3_json("{oops")[0].error.startswith("invalid")


def test_tool_schema_is_what_chat_templates_take():
    assert tool_schema(Calc) == {"type": "function", "function": {
        "name": "calc", "description": Calc.schema["description"], "parameters": Calc.schema["parameters"]}}
    with pytest.raises(TypeError, match="has no schema"):
        tool_schema(lambda: 1)


# ---- built-in tools ----


@pytest.mark.parametrize("expression, value", [
    ("482*37", "17834"), ("(1 + 2) ** 3 / 4", "6.75"), ("-7 // 2", "-4"), ("7 % 3", "1"), ("10/4", "2.5"),
    ("2**10", "1024"), (" 3 ", "3"),
])
def test_calc_computes(expression, value):
    assert Calc()(expression=expression) == value


@pytest.mark.parametrize("expression, reason", [
    ("__import__('os').system('true')", "only numbers"), ("x + 1", "only numbers"), ("(1).real", "only numbers"),
    ("'a' * 3", "only numbers"), ("1/0", "division by zero"), ("9**99", "exponent"),
    ("(10**60)**60 * 10**60 * 10**60 * 10**60 * 10**60 * 10**60", "digits"), ("1 +", "not an arithmetic"),
    ("1" * 500, "at most"), ("[1, 2]", "only numbers"), ("True + 1", "only numbers"),
])
def test_calc_refuses_anything_but_bounded_arithmetic(expression, reason):
    with pytest.raises(ValueError, match=reason):
        Calc()(expression=expression)


def test_python_tool_runs_in_the_sandbox():
    tool = Python(timeout_s=2.0)
    assert tool(code="print(6*7)") == "42"
    assert "ZeroDivisionError" in tool(code="1/0") and "[exit status 1]" in tool(code="1/0")
    assert tool(code="pass") == "(no output)"
    t0 = time.perf_counter()
    assert "[stopped:" in tool(code="while True: pass")
    assert time.perf_counter() - t0 < 10


# ---- the tool worker ----


@pytest.fixture(scope="module")
def worker():
    w = ToolWorker([{"name": CHAOS, "timeout_s": 1.0}, {"name": "calc"}, {"name": "tests.helpers.bad_tools:shout"}],
                   default_timeout_s=5.0, max_chars=1000)
    yield w
    w.shutdown()


def test_worker_serves_the_tools_schemas(worker):
    assert [s["function"]["name"] for s in worker.schemas] == ["chaos", "calc", "shout"]


MODES = {"raise": "exception", "hang": "timeout", "spin": "timeout", "exit": "exception", "segfault": "exception",
         "exit-call": "exception"}


def test_each_bad_call_fails_alone_within_its_timeout(worker):
    calls = [("calc", {"expression": "2*3"})]
    for mode in ["raise", "hang", "flood", "exit", "spin", "segfault", "exit-call", "object", "ok"]:
        calls += [("chaos", {"mode": mode}), ("calc", {"expression": "6*7"})]
    restarts = worker.ping()["restarts"]
    results = worker.call(calls)
    assert len(results) == len(calls)
    assert results[0].text == "6" and results[0].failure is None
    assert all(r.text == "42" and r.failure is None for r in results[2::2])
    by_mode = dict(zip([a["mode"] for _, a in calls[1::2]], results[1::2]))
    for mode, kind in MODES.items():
        r = by_mode[mode]
        assert r.failure and r.failure.split(":")[0] == kind, (mode, r)
        assert r.text == f"error: {r.failure}"
        assert r.seconds <= 1.0 + GRACE_S + 2.0, (mode, r.seconds)
    assert "tool exploded" in by_mode["raise"].failure
    assert by_mode["flood"].failure is None and len(by_mode["flood"].text) < 1100
    assert by_mode["flood"].text.endswith(f"[... {10 * 1024 * 1024 - 1000} more characters cut]")
    assert by_mode["object"].text == '{"ok": [1, 2]}'
    assert by_mode["ok"].text == "echo ok"
    # hang, spin, exit and segfault took their child down: each is started again when next needed
    assert [r.text for r in worker.call([("calc", {"expression": "1+1"})] * 8)] == ["2"] * 8
    assert worker.ping()["restarts"] == restarts + 4


@pytest.mark.parametrize("call, reason", [
    (("nope", {}), "no tool named 'nope' (tools: calc, chaos, shout)"),
    (("calc", {"expr": "1"}), "arguments do not fit calc"),
    (("calc", {}), "arguments do not fit calc"),
    (("calc", ["1+1"]), "the arguments must be an object"),
])
def test_calls_that_do_not_fit_are_invalid(worker, call, reason):
    [r] = worker.call([call])
    assert r.failure.startswith("invalid: ") and reason in r.failure


def test_tool_errors_are_failures_with_their_message(worker):
    [r] = worker.call([("calc", {"expression": "1/0"})])
    assert r.failure == "exception: ValueError: division by zero"


def test_async_tools_are_awaited(worker):
    assert worker.call([("shout", {"text": "hi"})])[0].text == "HI"


@pytest.mark.parametrize("tools, message", [
    ([{"name": "tests.helpers.bad_tools:Unschemaed"}], "has no schema"),
    ([{"name": "no_such_tool"}], "no_such_tool"),
    ([{"name": "calc", "bogus": 1}], "bogus"),
])
def test_a_tool_that_cannot_load_fails_at_start_naming_it(tools, message):
    with pytest.raises(RuntimeError, match=message):
        ToolWorker(tools)


def test_hung_calls_do_not_hold_up_the_others(worker):
    """Four child processes: three calls hanging at once cost one timeout, and the rest go on."""
    calls = [("chaos", {"mode": "hang"})] * 2 + [("chaos", {"mode": "spin"})] + [("calc", {"expression": "1+2"})] * 30
    t0 = time.perf_counter()
    results = worker.call(calls)
    elapsed = time.perf_counter() - t0
    assert [r.failure.split(":")[0] for r in results[:3]] == ["timeout"] * 3
    assert all(r.text == "3" for r in results[3:])
    assert elapsed < 1.0 + GRACE_S + 2.0, elapsed
