"""Tools for the multi-turn tests, named as "tests.helpers.bad_tools:<name>".

`Chaos` misbehaves according to its `mode` argument, so one batch of calls can mix good
ones with calls that raise, hang, flood, exit or segfault, and a test can check that
only those calls fail.
"""

from __future__ import annotations

import ctypes
import os
import time


class Chaos:
    schema = {"name": "chaos", "description": "Misbehave on purpose.",
              "parameters": {"type": "object", "properties": {"mode": {"type": "string"}}, "required": ["mode"]}}

    def __call__(self, mode: str) -> str:
        if mode == "raise":
            raise RuntimeError("tool exploded")
        if mode == "hang":
            while True:
                time.sleep(60)
        if mode == "spin":  # holds the GIL: only a kill stops it
            while True:
                pass
        if mode == "flood":
            return "x" * (10 * 1024 * 1024)
        if mode == "exit":
            os._exit(3)
        if mode == "segfault":
            ctypes.string_at(0)
        if mode == "exit-call":
            raise SystemExit(0)
        if mode == "object":
            return {"ok": [1, 2]}
        return f"echo {mode}"


async def shout(text: str) -> str:
    """An async tool: awaited in the tool process."""
    return text.upper()


shout.schema = {"name": "shout", "description": "Upper-case a text.",
                "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}


class Unschemaed:
    def __call__(self) -> str:
        return "?"


class BrokenEnv:
    """An environment whose `step` raises on a turn that says so, and whose reward is the turn count."""

    def reset(self, row, system_prompt=None):
        return [{"role": "user", "content": row["prompt"]}]

    def step(self, turn):
        if "boom" in turn.text:
            raise RuntimeError("env exploded")
        return list(turn.calls)

    def observe(self, calls, results):
        return [{"role": "tool", "content": r.text} for r in results]

    def reward(self, episode):
        return float(episode.turns)


class ChaosEnv:
    """Ignores what the model writes: the first turn of each episode gets one call the
    environment picks, cycling through MODES across episodes (a hostile tool, an unreadable
    call, the plugin `convert` tool, `calc`; `issued` records them); the episode ends after
    the next turn. (A first turn cut by rollout.max_tokens ends its episode before this.)"""

    MODES = ["raise", "hang", "flood", "bad json", "spin", "convert", "exit", "calc"]
    issued: list[str] = []  # every mode handed out in this process, in order

    def reset(self, row, system_prompt=None):
        return [{"role": "user", "content": row["prompt"]}]

    def step(self, turn):
        from rlvr.tools.calls import ToolCall

        if turn.index > 0:
            return []
        mode = self.MODES[len(self.issued) % len(self.MODES)]
        self.issued.append(mode)
        if mode == "bad json":
            return [ToolCall(None, error="invalid: the tool call is not valid JSON (made up by ChaosEnv)")]
        if mode == "convert":
            return [ToolCall("convert", {"value": 2, "unit": "km", "to": "m"})]
        if mode == "calc":
            return [ToolCall("calc", {"expression": "6*7"})]
        return [ToolCall("chaos", {"mode": mode})]

    def observe(self, calls, results):
        return [{"role": "tool", "content": r.text} for r in results]

    def reward(self, episode):
        return None


def env_names() -> str:
    """The names of the environment variables the tool process sees, one per line."""
    return "\n".join(sorted(os.environ))


env_names.schema = {"name": "env_names", "description": "List the environment's variable names.",
                    "parameters": {"type": "object", "properties": {}}}
