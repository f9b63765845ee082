"""Chat messages and tools of a request, read into what a chat template takes (the
`transformers` `apply_chat_template(messages, tools=...)` form); any problem is an `ApiError`.

* A message keeps its role (developer becomes system), its content as one string (null is "",
  text parts are joined; other parts, such as image_url or input_audio, are refused: "only text
  content parts are supported"), an assistant's `tool_calls` (arguments as a dict, parsed when
  given as a JSON string, since templates render `arguments | tojson`; null or blank is {}; a
  call without an id gets `call_<i>_<j>`, stable so the rendered prompt is), a tool message's
  `tool_call_id`, and the `name` of the others. Any other key is dropped. Content with an
  unpaired surrogate (no UTF-8 form, so no tokens) is refused.
* A tool is `{"type": "function", "function": {name, description ("" by default), parameters
  (an empty object schema by default)}}`. In tools and tool calls `type` may be left out.
"""

from __future__ import annotations

import json

from rlvr.agent.checks import ApiError, check_str, check_utf8, kind, show, type_error

MAX_MESSAGES = 4096
MAX_TOOLS = 128
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _text(content: object, param: str) -> str:
    """A message's content as one string: a string as is, null as "", text parts joined."""
    if content is None or isinstance(content, str):
        return check_utf8(content or "", param)
    if not isinstance(content, list):
        raise type_error(param, "a string, null or an array of text parts", content)
    texts = []
    for k, part in enumerate(content):
        if not isinstance(part, dict):
            raise type_error(f"{param}[{k}]", "a content part object", part)
        if part.get("type") != "text":
            raise ApiError(400, f"only text content parts are supported: {param}[{k}] has type "
                                f"{show(part.get('type'))}", param)
        if not isinstance(part.get("text"), str):
            raise type_error(f"{param}[{k}].text", "a string", part.get("text"))
        texts.append(part["text"])
    return check_utf8("".join(texts), param)



def _arguments(value: object, param: str) -> dict:
    """Tool-call arguments as a dict: an object as is, a JSON string parsed (templates render
    `arguments | tojson`, and vLLM parses them the same way); null or a blank string is {}."""
    if isinstance(value, dict):
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if not isinstance(value, str):
        raise type_error(param, "a JSON object as a string, or an object", value)
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        raise ApiError(400, f"{param} must be a JSON object, got a string that is not valid JSON", param) from None
    if not isinstance(parsed, dict):
        raise ApiError(400, f"{param} must be a JSON object, got a string holding {kind(parsed)}", param)
    return parsed


def _function(item: object, param: str) -> tuple[dict, dict, str]:
    """A tool or a tool call: `{"type": "function" (may be left out), "function": {"name", ...}}`;
    gives the item, its function object and the function's name."""
    if not isinstance(item, dict):
        raise type_error(param, "an object", item)
    if item.get("type") not in (None, "function"):
        raise ApiError(400, f'{param}.type must be "function", got {show(item.get("type"))}', f"{param}.type")
    function = item.get("function")
    if not isinstance(function, dict):
        raise type_error(f"{param}.function", "an object", function)
    return item, function, check_str(function.get("name"), f"{param}.function.name", required=True)


def _tool_call(call: object, param: str, default_id: str) -> dict:
    """One assistant tool call, template-ready; a call without an id gets `default_id`."""
    call, function, name = _function(call, param)
    call_id = check_str(call.get("id"), f"{param}.id", default=default_id)
    arguments = _arguments(function.get("arguments"), f"{param}.function.arguments")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _message(message: object, i: int) -> dict:
    """One message, template-ready: role (developer read as system), content a string, and the
    keys its role keeps (tool_calls; tool_call_id; name); any other key is dropped."""
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise type_error(where, "an object", message)
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise ApiError(400, f"{where}.role must be one of system, developer, user, assistant, tool; "
                            f"got {show(role)}", f"{where}.role")
    out = {"role": ROLES[role], "content": _text(message.get("content"), f"{where}.content")}
    if role == "assistant":
        calls = message.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise type_error(f"{where}.tool_calls", "an array", calls)
        if calls:
            out["tool_calls"] = [_tool_call(call, f"{where}.tool_calls[{j}]", f"call_{i}_{j}")
                                 for j, call in enumerate(calls)]
        return out
    if role == "tool" and (call_id := check_str(message.get("tool_call_id"), f"{where}.tool_call_id")) is not None:
        out["tool_call_id"] = call_id
    if (name := check_str(message.get("name"), f"{where}.name")) is not None:
        out["name"] = name
    return out


def read_messages(value: object) -> list[dict]:
    """The request's `messages` (required: 1 to 4096), each template-ready."""
    if value is None:
        raise ApiError(400, "messages is required", "messages")
    if not isinstance(value, list):
        raise type_error("messages", "an array of messages", value)
    if not 1 <= len(value) <= MAX_MESSAGES:
        raise ApiError(400, f"messages must hold 1 to {MAX_MESSAGES} messages, got {len(value)}", "messages")
    return [_message(message, i) for i, message in enumerate(value)]


def _tool(tool: object, param: str) -> dict:
    """One tool, normalised: `{"type": "function", "function": {name, description, parameters}}`."""
    _, function, name = _function(tool, param)
    description = check_str(function.get("description"), f"{param}.function.description", default="")
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise type_error(f"{param}.function.parameters", "a JSON schema object", parameters)
    parameters = parameters if parameters is not None else {"type": "object", "properties": {}}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def read_tools(value: object) -> list[dict] | None:
    """The request's tools (an empty list is no tools: None)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise type_error("tools", "an array of tools", value)
    if len(value) > MAX_TOOLS:
        raise ApiError(400, f"tools must hold at most {MAX_TOOLS} tools, got {len(value)}", "tools")
    return [_tool(tool, f"tools[{i}]") for i, tool in enumerate(value)] or None
