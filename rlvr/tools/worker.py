"""A tool worker: the tools of a run loaded in `procs` child processes, the calls of a batch run
concurrently across them, each under its own hard timeout (`timeout_s + GRACE_S` from the
moment it starts; then that child is SIGKILLed and started again while the others go on),
the machinery of `rlvr.cluster.isolated` that the reward worker uses too. So a call that
hangs costs its own episode its timeout, not the calls queued behind it, as long as fewer
than `procs` hang at once. A plain class; the run makes it a Ray actor
(`rlvr.tools.group.ToolGroup`), `rlvr eval` uses it in-process (`LocalTools`).

Every call gets a `ToolResult`: the tool's output as text (a non-string is JSON, a longer
one is cut to `max_chars` and says so), or a failure: `invalid` (no such tool, arguments
that do not fit its signature), `exception` (it raised, or its process died), `timeout`
(it hung and was killed). A failure's text is what the model is shown: `error: <reason>`.
"""

from __future__ import annotations

import inspect
import json
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait

from rlvr.cluster.isolated import GRACE_S, IsolatedChild, SetupError, call, kill_group, raised, serve


@dataclass
class ToolResult:
    text: str
    failure: str | None = None  # "<kind>: reason" (kind: invalid, exception, timeout)
    seconds: float = 0.0
    killed: bool = False  # its tool process hung past the deadline (killed) or died (`ToolGroup.kills`)


class ToolProcess(IsolatedChild):
    """One child process holding the tools."""

    entry = "rlvr.tools.worker:_child_main"
    label = "tool worker"
    what = "tool process"
    plugins = "the tools"


@dataclass
class _Running:
    index: int
    started: float
    deadline: float
    timeout_s: float


class ToolWorker:
    """`tools`: `rollout.multi_turn.tools` items ({name, timeout_s, **options}); `procs`: the
    child processes that run calls side by side; `env_passthrough`: environment variables
    they get beyond the allow-list (`rollout.multi_turn.tool_env_passthrough`)."""

    def __init__(self, tools: list[dict], default_timeout_s: float = 10.0, max_chars: int = 4096, procs: int = 4,
                 env_passthrough: list[str] | tuple = ()):
        from rlvr.config.rollout import ToolItem

        items = ToolItem.parse(list(tools))
        self.max_chars, self.default_timeout_s = max_chars, default_timeout_s
        payload = {"tools": [(item.name, item.options) for item in items], "max_chars": max_chars}
        env = tuple(env_passthrough)
        self._procs = [ToolProcess(payload, env)]  # the first one checks that the tools load
        try:
            self._procs += [ToolProcess(payload, env) for _ in range(max(1, procs) - 1)]
        except BaseException:
            self.shutdown()
            raise
        names = [s["function"]["name"] for s in self.schemas]
        self.timeouts = {name: item.timeout_s or default_timeout_s for name, item in zip(names, items)}

    @property
    def schemas(self) -> list[dict]:
        """What the chat template gets as `tools=` (`rlvr.tools.calls.tool_schema` of each tool)."""
        return list(self._procs[0].ready_info)

    @property
    def kills(self) -> int:
        """Tool processes killed on a timeout or found dead, so far (each is started again)."""
        return sum(p.kills for p in self._procs)

    restarts = kills  # the older name

    def ping(self) -> dict:
        return {"pids": [p.pid() for p in self._procs], "restarts": self.kills, "kills": self.kills,
                "tools": sorted(self.timeouts)}

    def call(self, calls: list[tuple[str, dict]]) -> list[ToolResult]:
        """Run `(tool name, arguments)` calls, up to one per child process at a time; one result each, in order."""
        results: list[ToolResult | None] = [None] * len(calls)
        queue, running = deque(range(len(calls))), {}
        try:
            while queue or running:
                for proc in self._procs:
                    if queue and proc not in running:
                        running[proc] = self._start(proc, queue.popleft(), calls)
                self._wait(running, results)
        except BaseException:
            for proc in running:  # they may still be busy with these calls: never reuse them
                if proc._proc is not None:
                    kill_group(proc._proc)
            raise
        return results

    def _start(self, proc: ToolProcess, i: int, calls) -> _Running:
        proc._ensure_running()
        timeout = self.timeouts.get(calls[i][0], self.default_timeout_s)
        now = time.perf_counter()
        proc._send(("call", [(i, calls[i][0], calls[i][1])]))
        return _Running(i, now, now + timeout + GRACE_S, timeout)

    def _wait(self, running: dict, results: list) -> None:
        """Wait for the next result or deadline; record what finished (a child that hung past its
        deadline or died is restarted, its call failed)."""
        by_conn = {proc._results: proc for proc in running}
        soonest = min(r.deadline for r in running.values())
        wait(list(by_conn), timeout=max(0.0, soonest - time.perf_counter()))
        for proc, r in list(running.items()):
            status, message = proc._recv(0.0)
            if status == "timed out" and time.perf_counter() < r.deadline:
                continue
            del running[proc]
            if status != "ok":
                reason = proc._failure_reason(status, r.timeout_s)
                results[r.index] = ToolResult(f"error: {reason}", reason, time.perf_counter() - r.started, True)
                proc._kill()  # started again when next needed: the other calls do not wait for it
                continue
            got, text, failure, seconds = message
            if got != r.index:
                raise RuntimeError(f"tool worker: protocol error, expected call {r.index} got {got}")
            # the child already cut it (with a note); this holds if a tool wrote to the pipe itself
            results[r.index] = ToolResult(text if len(text) <= self.max_chars + 64 else _cap(text, self.max_chars),
                                          failure, seconds)

    def shutdown(self) -> None:
        for proc in self._procs:
            proc.shutdown()


def _cap(text: str, max_chars: int) -> str:
    """
    >>> _cap("x" * 10, 4)
    'xxxx\\n[... 6 more characters cut]'
    """
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n[... {len(text) - max_chars} more characters cut]"


# ---- the child process ----


def _child_main() -> None:
    serve(_load_tools, _run_calls)


def _load_tools(payload) -> tuple[dict, list[dict]]:
    from rlvr.plugins import TOOLS, load
    from rlvr.tools.calls import tool_schema

    tools, schemas = {}, []
    for name, options in payload["tools"]:
        try:
            tool = load(name, options, TOOLS, "tool")
            schema = tool_schema(tool)
        except BaseException as e:
            raise SetupError(f"{name}: {type(e).__name__}: {e}") from None
        tools[schema["function"]["name"]] = tool
        schemas.append(schema)
    return {"tools": tools, "max_chars": payload["max_chars"]}, schemas


def _run_calls(state, calls, send) -> None:
    for i, name, arguments in calls:
        t0 = time.perf_counter()
        text, failure = _run_one(state["tools"], name, arguments)
        send((i, _cap(text, state["max_chars"]), failure, time.perf_counter() - t0))


def _run_one(tools: dict, name: str, arguments) -> tuple[str, str | None]:
    """One call; every problem becomes a failure, never an exception."""
    tool = tools.get(name)
    if tool is None:
        failure = f"invalid: no tool named {name!r} (tools: {', '.join(sorted(tools))})"
        return f"error: {failure}", failure
    if not isinstance(arguments, dict):
        failure = "invalid: the arguments must be an object"
        return f"error: {failure}", failure
    try:
        inspect.signature(tool).bind(**arguments)
    except (TypeError, ValueError) as e:
        if not isinstance(e, ValueError) or "no signature" not in str(e):
            failure = f"invalid: arguments do not fit {name}: {e}"
            return f"error: {failure}", failure
    try:
        result = call(tool, **arguments)
    except BaseException as e:  # SystemExit too: a tool must not end the worker
        failure = raised(e)
        return f"error: {failure}", failure
    return (result if isinstance(result, str) else json.dumps(result, default=str)), None


class LocalTools:
    """A `ToolWorker` in this process behind `ToolGroup`'s `submit` / `collect` (`rlvr eval`,
    `rlvr sample`, tests): the calls run when collected, still in the worker's child process."""

    def __init__(self, cfg):
        self.worker = ToolWorker(list(cfg.tools), cfg.tool_timeout_s, cfg.max_observation_chars, cfg.tool_procs,
                                 list(cfg.tool_env_passthrough))

    @property
    def restarts(self) -> int:
        return self.worker.restarts

    @property
    def kills(self) -> int:
        return self.worker.kills

    @property
    def schemas(self) -> list[dict]:
        return self.worker.schemas

    def submit(self, calls: list[tuple[str, dict]]) -> list:
        return list(calls)

    def collect(self, pending: list) -> list[ToolResult]:
        return self.worker.call(pending)

    def stop(self) -> None:
        self.worker.shutdown()
