"""The environment of multi-turn episodes: what an episode starts with, what happens after each
assistant turn, and an optional reward of its own (`rollout.multi_turn.env`, a name
registered in `rlvr.envs` or `module:attr`; `env_options` go to its constructor).

    class MyEnv(ToolEnv):                       # or any class with these four methods
        def reset(self, row, system_prompt) -> list[dict]:  # the first messages, from a data row
        def step(self, turn) -> list[ToolCall]: # the calls to run after an assistant turn ([]: the episode ends)
        def observe(self, calls, results) -> list[dict]:  # messages added after the calls ran
        def reward(self, episode) -> float | None:        # added to the verifiers' reward (None: nothing)

Every episode gets an environment object of its own (built with `env_options`), so it can
keep the episode's state on `self`; `reset` is called on one more object per data row, when
the prompts are rendered (the n episodes of a prompt start from the same messages).
`system_prompt` is `data.system_prompt` (None when unset). `turn` has `text` (the
assistant's turn, decoded), `calls` (parsed with `rollout.multi_turn.parser`,
`rlvr.tools.calls.ToolCall`: a call with `error` set could not be read), `index` (0 for
the first turn) and `row` (`answer`, `metadata`); `step` may return calls of its own
(`ToolCall(name, arguments)`), or a call with `error` set to refuse one (its error is the
observation). `results` are `ToolResult`s (`text`, `failure`); `episode` has `messages`
(the whole conversation), `row`, `turns`, `tool_calls`, `truncated`.

The environment runs in the driver process: a method that raises ends that episode (counted
as a tool failure of kind `exception`), the run goes on; tools run isolated in the tool
workers (`rlvr.tools.worker`), never here.
"""

from __future__ import annotations

import functools


def env_factory(name: str, options: dict | None = None):
    """A function that builds a new environment object per call (one is built here, so a bad
    name or option fails now)."""
    from rlvr.plugins import ENVS, load, resolve_env_name

    target = resolve_env_name(name)  # "module:attr": later loads skip the entry-point lookup (ms each)
    load(target, options, ENVS, "environment")
    return functools.partial(load, target, dict(options or {}), ENVS, "environment")


class ToolEnv:
    """The default: the row's messages (after the system prompt, if any); every tool call of a
    turn is run and its result comes back as a `tool` message; a turn without a tool call ends
    the episode. A call that could not be read gets its error as the observation."""

    def reset(self, row: dict, system_prompt: str | None = None) -> list[dict]:
        from rlvr.data.prompts import chat_messages

        return chat_messages(row, system_prompt)

    def step(self, turn) -> list:
        return list(turn.calls)

    def observe(self, calls, results) -> list[dict]:
        return [{"role": "tool", "name": call.name or "", "content": result.text} for call, result in zip(calls, results)]

    def reward(self, episode) -> float | None:
        return None
