"""Tool calls: how a model's turn names them (`PARSERS`, `rollout.multi_turn.parser`), and how a
tool describes itself to the chat template (`tool_schema`).

* `hermes`: the Qwen2.5 / Qwen3 / Hermes format, `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
  any number of them in a turn (whitespace inside the tags is allowed, as the templates write it).
* `llama3_json`: Llama 3.x's JSON tool calls, `{"name": ..., "parameters": {...}}` as the whole
  turn (after an optional `<|python_tag|>`), several separated by `;`.

A call that cannot be read (not JSON, no name, arguments that are not an object) is kept as
a `ToolCall` with `error` set: the model gets that error as its observation (it learns to
write calls that parse), and it is counted in `multi_turn/tool_failures/invalid`.

A tool is a class or function with a `schema` attribute: `{"name", "description",
"parameters"}` (the parameters as JSON schema), what the chat template receives as
`tools=[{"type": "function", "function": schema}]`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field


@dataclass
class ToolCall:
    """One call read from a turn: `name` and `arguments`, or `error` saying why it could not be read."""

    name: str | None
    arguments: dict = field(default_factory=dict)
    error: str | None = None
    raw: str = ""


_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def _from_json(raw: str, args_key: str) -> ToolCall:
    try:
        obj = json.loads(raw)
    except ValueError as e:
        return ToolCall(None, error=f"invalid: the tool call is not valid JSON ({e.msg} at column {e.colno})", raw=raw)
    except RecursionError:
        return ToolCall(None, error="invalid: the tool call's JSON is nested too deeply", raw=raw)
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return ToolCall(None, error='invalid: a tool call needs a "name" string', raw=raw)
    arguments = obj.get(args_key, obj.get("arguments", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
    if not isinstance(arguments, dict):
        return ToolCall(obj["name"], error=f'invalid: "{args_key}" must be an object', raw=raw)
    return ToolCall(obj["name"], arguments, raw=raw)


def parse_hermes(text: str) -> list[ToolCall]:
    """Every `<tool_call>...</tool_call>` of a turn, in order.

    >>> [(c.name, c.arguments) for c in parse_hermes('ok <tool_call>\\n{"name": "calc", "arguments": {"expression": "2*3"}}\\n</tool_call>')]
    [('calc', {'expression': '2*3'})]
    >>> parse_hermes("<tool_call>{name: calc}</tool_call>")[0].error.split(" (")[0]
    'invalid: the tool call is not valid JSON'
    >>> parse_hermes("the answer is 6")
    []
    """
    return [_from_json(raw, "arguments") for raw in _HERMES.findall(text)]


def parse_llama3_json(text: str) -> list[ToolCall]:
    """Llama 3.x JSON tool calls: the turn is one or more `{"name", "parameters"}` objects.

    >>> [(c.name, c.arguments) for c in parse_llama3_json('<|python_tag|>{"name": "calc", "parameters": {"expression": "1+1"}}')]
    [('calc', {'expression': '1+1'})]
    >>> parse_llama3_json("The answer is 2.")
    []
    """
    body = text.strip().removeprefix("<|python_tag|>").strip()
    if not body.startswith("{"):
        return []
    return [_from_json(part.strip(), "parameters") for part in body.split(";") if part.strip()]


PARSERS = {"hermes": parse_hermes, "llama3_json": parse_llama3_json}


def tool_schema(tool) -> dict:
    """A tool's description as chat templates take it: `{"type": "function", "function": schema}`."""
    schema = getattr(tool, "schema", None)
    if not (isinstance(schema, dict) and isinstance(schema.get("name"), str) and isinstance(schema.get("parameters"), dict)):
        raise TypeError(f"tool {tool!r} has no schema: give it a `schema` attribute "
                        '{"name": ..., "description": ..., "parameters": {JSON schema}}')
    return {"type": "function", "function": {"name": schema["name"], "description": schema.get("description", ""),
                                             "parameters": schema["parameters"]}}
