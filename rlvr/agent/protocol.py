"""The OpenAI API of the agent endpoint as pure functions: reading `/v1/chat/completions` and
`/v1/completions` request bodies into a `GenRequest`, and building the responses (whole, or as
server-sent-event chunks) from the sampled `Choice`s. No I/O: the HTTP server, the chat
template, the tokenizer and the engines live elsewhere; this module only knows JSON.

A request is read whole before anything is sampled. Every problem with it is an `ApiError`
(HTTP 400 and OpenAI's error object, `param` naming the field as
`messages[2].tool_calls[0].function.arguments`), and nothing else is raised, whatever JSON the
body holds. Messages name the expected type and the JSON type given; values are echoed only
when they are scalars, cut to 80 characters (`rlvr.agent.checks`). Chat messages and tools are
read into the chat template's form by `rlvr.agent.messages`.

Chat (`parse_chat_request`):

* supported: `model` (`rlvr:<episode id>` addresses an episode, `episode_of`), `messages`
  (roles system, developer (read as system), user, assistant (with `tool_calls`, arguments as
  a JSON string or an object, given to the template as a dict), tool (`tool_call_id`); content
  a string, null or text parts; `name`), `tools` (functions), `tool_choice` ("auto", "none":
  the reply is not read for tool calls), `n` (1-16), `temperature` [0, 2], `top_p` (0, 1],
  `top_k` (-1 or >= 1, as vLLM), `max_tokens`, `max_completion_tokens` (wins over max_tokens),
  `stop` (up to 4), `seed`, `logprobs` (the sampled token's), `stream`,
  `stream_options.include_usage`.
* accepted and ignored: `user`, `metadata`, `store`, `parallel_tool_calls`, `service_tier`,
  `reasoning_effort`, `prediction` (null), `modalities` (["text"]), `top_logprobs` 0,
  `frequency_penalty` / `presence_penalty` 0, `logit_bias` {}, `response_format`
  {"type": "text"}, `functions` [] / `function_call` null, and any key not named here.
* rejected (400): `tool_choice` "required" or a named function ('tool_choice ... is not
  supported: only "auto" and "none"'); content parts other than text ("only text content parts
  are supported"); `top_logprobs` > 0 ("not supported: only the sampled token's log-prob is
  returned"); non-zero `frequency_penalty` / `presence_penalty` and a non-empty `logit_bias`
  ("... would change the sampling distribution the trainer assumes"); `response_format` other
  than text, `audio`, `prediction`, `modalities` other than ["text"], and the legacy
  `functions` / `function_call` ("not supported", naming the field); a `model` or message
  content holding an unpaired surrogate ("not valid Unicode": it has no UTF-8 form).

Completion (`parse_completion_request`): `prompt` (a string or token ids, alone or in a
one-item list; "one prompt per request"), `logprobs` (null, or 0: the sampled token's),
`echo` false, `suffix` null and `best_of` 1, and the same `model`, sampling, `stop`, `seed`,
`stream`, penalty and `logit_bias` rules as chat (there is no `max_completion_tokens`).
Rejected: `logprobs` > 0, `echo` true, `suffix`, `best_of` > 1.

Integers are bounded: `max_tokens`, `top_k` and token ids below 2**31, `seed` in
[-2**63, 2**64).

Responses follow OpenAI's shapes as the `openai` client's models read them. Non-finite
log-probs are written as -9999.0 (as vLLM does) so that every body is strict JSON.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

from rlvr.agent.checks import (ApiError, check_bool, check_int, check_number, check_str, check_utf8, is_int, kind,
                               show, type_error, unsupported)
from rlvr.agent.messages import read_messages, read_tools
from rlvr.tools.calls import PARSERS, ToolCall

__all__ = ["ApiError", "Choice", "GenRequest", "chat_chunks", "chat_completion", "episode_of", "find_stop",
           "parse_chat_request", "parse_completion_request", "split_tool_calls", "sse", "text_chunks",
           "text_completion", "usage"]

MAX_N = 16
MAX_STOPS = 4
MAX_INT = 2**31 - 1  # max_tokens, top_k and token ids stay within an int32
SEED_RANGE = (-(2**63), 2**64 - 1)
LOGPROB_FLOOR = -9999.0
_EPISODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_HERMES_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)  # the blocks parse_hermes reads


@dataclass
class GenRequest:
    """What a request asks for, checked: the endpoint renders `messages` (and `tools`) with the
    chat template, or tokenizes `prompt`, and samples `n` replies with these settings."""

    kind: str  # "chat" | "completion"
    model: str
    episode: str | None = None
    messages: list[dict] | None = None
    tools: list[dict] | None = None
    prompt: str | list[int] | None = None
    n: int = 1
    max_tokens: int | None = None  # None: the endpoint decides (the room left in the context)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    stream: bool = False
    include_usage: bool = False
    parse_tools: bool = True


@dataclass
class Choice:
    """One sampled reply: its decoded text (after any stop cut) and why it ended."""

    index: int
    text: str
    finish_reason: str  # "stop" | "length"
    token_texts: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


# ---- requests ----


def episode_of(model: str) -> str | None:
    """The episode a model name addresses: `rlvr:<id>` gives the id, any other name None.

    >>> episode_of("rlvr:ep-7.turns_2"), episode_of("Qwen/Qwen3-0.6B")
    ('ep-7.turns_2', None)
    >>> try:
    ...     episode_of("rlvr:../etc")
    ... except ApiError as e:
    ...     print(e.status, e.param)
    400 model
    """
    if not model.startswith("rlvr:"):
        return None
    episode = model[len("rlvr:"):]
    if not _EPISODE_ID.fullmatch(episode):
        raise ApiError(400, f"model {show(model)} names no valid episode: after rlvr: give an id of "
                            "1-128 characters A-Z a-z 0-9 _ . -", "model")
    return episode


def _model(body: object) -> tuple[str, str | None]:
    """The body's `model` (required, non-empty) and the episode it addresses."""
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {kind(body)}")
    model = check_utf8(check_str(body.get("model"), "model", required=True), "model")  # responses echo it
    return model, episode_of(model)


def _parse_tools(choice: object) -> bool:
    """`tool_choice`: "auto" (or absent) reads the reply for tool calls; "none" does not."""
    if choice is None or choice == "auto":
        return True
    if choice == "none":
        return False
    if isinstance(choice, (str, dict)):
        what = show(choice) if isinstance(choice, str) else "naming a function"
        raise ApiError(400, f'tool_choice {what} is not supported: only "auto" and "none"', "tool_choice")
    raise type_error("tool_choice", '"auto" or "none"', choice)


def _stop(value: object) -> list[str]:
    """`stop`: null, a string, or up to 4 non-empty strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [check_str(value, "stop", required=True)]
    if not isinstance(value, list):
        raise type_error("stop", "a string or an array of strings", value)
    if len(value) > MAX_STOPS:
        raise ApiError(400, f"stop takes at most {MAX_STOPS} strings, got {len(value)}", "stop")
    for i, stop in enumerate(value):
        if not isinstance(stop, str) or not stop:
            raise ApiError(400, f"stop[{i}] must be a non-empty string, got {show(stop)}", f"stop[{i}]")
    return list(value)


def _sampling(body: dict) -> dict:
    """The settings chat and completion requests share, as GenRequest keyword arguments."""
    top_k = check_int(body.get("top_k"), "top_k", -1, -1, MAX_INT)
    if top_k == 0:
        raise ApiError(400, "top_k must be -1 (off) or at least 1, got 0", "top_k")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise type_error("stream_options", "an object", options)
    return {"n": check_int(body.get("n"), "n", 1, 1, MAX_N),
            "temperature": check_number(body.get("temperature"), "temperature", 1.0, 0, 2),
            "top_p": check_number(body.get("top_p"), "top_p", 1.0, 0, 1, lo_open=True),
            "top_k": top_k, "seed": check_int(body.get("seed"), "seed", None, *SEED_RANGE),
            "stop": _stop(body.get("stop")), "stream": check_bool(body.get("stream"), "stream"),
            "include_usage": check_bool((options or {}).get("include_usage"), "stream_options.include_usage")}


def _check_neutral(body: dict) -> None:
    """Penalties and logit biases would change the sampling distribution the trainer assumes:
    only their neutral values pass."""
    for key in ("frequency_penalty", "presence_penalty"):
        if check_number(body.get(key), key, 0.0, -math.inf, math.inf) != 0:
            raise unsupported(key, "only 0; it would change the sampling distribution the trainer assumes")
    bias = body.get("logit_bias")
    if bias is not None and not isinstance(bias, dict):
        raise type_error("logit_bias", "an object", bias)
    if bias:
        raise unsupported("logit_bias", "it would change the sampling distribution the trainer assumes")


def _check_chat_extras(body: dict) -> None:
    """The chat fields accepted only at their neutral value (see the module docstring)."""
    _check_neutral(body)
    if check_int(body.get("top_logprobs"), "top_logprobs", 0, 0, MAX_INT):
        raise unsupported("top_logprobs", "only the sampled token's log-prob is returned")
    response_format = body.get("response_format")
    if response_format is not None and not (isinstance(response_format, dict)
                                            and response_format.get("type") == "text"):
        raise unsupported("response_format", 'only {"type": "text"}; structured outputs are not')
    for key, why in (("audio", "the endpoint answers with text only"), ("prediction", "only null"),
                     ("function_call", "use tools (function_call is the legacy form)")):
        if body.get(key) is not None:
            raise unsupported(key, why)
    if body.get("functions") not in (None, []):
        raise unsupported("functions", "use tools (functions is the legacy form)")
    if body.get("modalities") not in (None, ["text"]):
        raise unsupported("modalities", 'only ["text"]')


def parse_chat_request(body: object) -> GenRequest:
    """A `/v1/chat/completions` body, checked and template-ready; any problem is an ApiError 400.

    >>> req = parse_chat_request({"model": "rlvr:ep1", "messages": [
    ...     {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
    ...     {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
    ...      "function": {"name": "calc", "arguments": '{"expression": "2*3"}'}}]},
    ...     {"role": "tool", "tool_call_id": "c1", "content": "6"}], "tool_choice": "none"})
    >>> req.episode, req.parse_tools, req.messages[0], req.messages[1]["tool_calls"][0]["function"]
    ('ep1', False, {'role': 'system', 'content': 'Be brief.'}, {'name': 'calc', 'arguments': {'expression': '2*3'}})
    """
    model, episode = _model(body)
    messages = read_messages(body.get("messages"))
    tools = read_tools(body.get("tools"))
    parse_tools = _parse_tools(body.get("tool_choice"))
    _check_chat_extras(body)
    max_tokens = check_int(body.get("max_tokens"), "max_tokens", None, 1, MAX_INT)
    max_completion_tokens = check_int(body.get("max_completion_tokens"), "max_completion_tokens", None, 1, MAX_INT)
    return GenRequest(kind="chat", model=model, episode=episode, messages=messages, tools=tools,
                      max_tokens=max_completion_tokens if max_completion_tokens is not None else max_tokens,
                      logprobs=check_bool(body.get("logprobs"), "logprobs"), parse_tools=parse_tools,
                      **_sampling(body))


def _prompt(value: object) -> str | list[int]:
    """`prompt`: a string or a list of token ids, alone or as the only item of a list."""
    param = "prompt"
    if value is None:
        raise ApiError(400, "prompt is required", param)
    if isinstance(value, list) and value and all(isinstance(p, (str, list)) for p in value):
        if len(value) > 1:
            raise ApiError(400, f"one prompt per request: got {len(value)}; send one request each", param)
        value, param = value[0], "prompt[0]"
    if isinstance(value, str) and value:
        return value
    if isinstance(value, str) or value == []:
        raise ApiError(400, f"{param} must not be empty", param)
    if not isinstance(value, list):
        raise type_error(param, "a string or an array of token ids", value)
    for k, token in enumerate(value):
        if not is_int(token):
            raise type_error(f"{param}[{k}]", "a token id (an integer)", token)
        check_int(token, f"{param}[{k}]", None, 0, MAX_INT)
    return list(value)


def _completion_logprobs(value: object) -> bool:
    """Completions' `logprobs` is a count of top alternatives: null is none, 0 the sampled token's."""
    if check_int(value, "logprobs", None, 0, MAX_INT):
        raise unsupported("logprobs", "only 0 (the sampled token's log-prob); top log-probs are not returned")
    return value is not None


def parse_completion_request(body: object) -> GenRequest:
    """A `/v1/completions` body, checked; any problem is an ApiError 400.

    >>> req = parse_completion_request({"model": "m", "prompt": [[1, 2, 3]], "logprobs": 0, "stop": "\\n"})
    >>> req.prompt, req.logprobs, req.stop
    ([1, 2, 3], True, ['\\n'])
    """
    model, episode = _model(body)
    prompt = _prompt(body.get("prompt"))
    _check_neutral(body)
    if check_bool(body.get("echo"), "echo"):
        raise unsupported("echo", "the prompt is not returned")
    if body.get("suffix") is not None:
        raise unsupported("suffix", "only null")
    if check_int(body.get("best_of"), "best_of", 1, 1, MAX_INT) > 1:
        raise unsupported("best_of", "only 1; ask for n replies instead")
    return GenRequest(kind="completion", model=model, episode=episode, prompt=prompt,
                      max_tokens=check_int(body.get("max_tokens"), "max_tokens", None, 1, MAX_INT),
                      logprobs=_completion_logprobs(body.get("logprobs")), **_sampling(body))


def find_stop(text: str, stops: list[str]) -> int | None:
    """Where the earliest stop string starts in `text`, or None.

    >>> find_stop("a b\\nc END d", ["END", "\\n"]), find_stop("abc", ["x"])
    (3, None)
    """
    starts = [at for at in (text.find(stop) for stop in stops if stop) if at >= 0]
    return min(starts) if starts else None


# ---- responses ----


def _read_calls(parser: str, text: str) -> list[ToolCall]:
    """The shared parser's calls; JSON nested too deep for `json.loads` (a degenerate sample can
    write thousands of `[`) raises RecursionError there, and is read here as no call."""
    try:
        return PARSERS[parser](text)
    except RecursionError:
        return []


def _split_hermes(text: str) -> tuple[str, list[ToolCall]]:
    """The text with its readable `<tool_call>` blocks cut out, and their calls (each block is
    read by the shared parser, so what counts as a call is the rollouts' rule)."""
    kept, calls, end = [], [], 0
    for block in _HERMES_BLOCK.finditer(text):
        found = _read_calls("hermes", block.group(0))
        if len(found) == 1 and found[0].error is None:
            kept.append(text[end:block.start()])
            calls.append(found[0])
            end = block.end()
    kept.append(text[end:])
    return "".join(kept), calls


def _split_llama3_json(text: str) -> tuple[str, list[ToolCall]]:
    """Llama 3 JSON calls are the whole turn: what is left is the calls that could not be read."""
    found = _read_calls("llama3_json", text)
    return "; ".join(call.raw for call in found if call.error), [call for call in found if call.error is None]


_SPLITTERS = {"hermes": _split_hermes, "llama3_json": _split_llama3_json}


def split_tool_calls(text: str, parser: str) -> tuple[str | None, list[dict]]:
    """A reply's content and its tool calls in OpenAI form (arguments as a JSON string, a fresh
    `call_<24 hex>` id each). With calls, the content is the rest of the text, stripped (None
    if nothing is left); calls the parser could not read stay in it as text. Without calls the
    text is returned as is.

    >>> text = 'Let me add. <tool_call>{"name": "calc", "arguments": {"expression": "1+2"}}</tool_call>'
    >>> content, calls = split_tool_calls(text, "hermes")
    >>> content, calls[0]["function"], calls[0]["id"][:5]
    ('Let me add.', {'name': 'calc', 'arguments': '{"expression": "1+2"}'}, 'call_')
    """
    if parser not in _SPLITTERS or parser not in PARSERS:
        raise ValueError(f"unknown tool-call parser {parser!r}: one of {sorted(set(_SPLITTERS) & set(PARSERS))}")
    rest, calls = _SPLITTERS[parser](text)
    if not calls:
        return text, []
    return rest.strip() or None, [
        {"id": f"call_{secrets.token_hex(12)}", "type": "function",
         "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)}}
        for call in calls]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """OpenAI's usage object.

    >>> usage(10, 5)
    {'prompt_tokens': 10, 'completion_tokens': 5, 'total_tokens': 15}
    """
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _logprob(value: float) -> float:
    return value if math.isfinite(value) else LOGPROB_FLOOR


def _chat_logprobs(req: GenRequest, choice: Choice) -> dict | None:
    """Chat log-probs, one entry per sampled token (no alternatives), or None when not asked."""
    if not req.logprobs:
        return None
    return {"content": [{"token": token, "logprob": _logprob(logprob), "top_logprobs": [],
                         "bytes": list(token.encode("utf-8", "replace"))}
                        for token, logprob in zip(choice.token_texts, choice.logprobs, strict=False)]}


def _assistant_turn(req: GenRequest, choice: Choice, parser: str) -> tuple[str | None, list[dict], str]:
    """A reply's content, tool calls and finish reason ("tool_calls" when it made some and was
    not cut by the length limit)."""
    content, calls = split_tool_calls(choice.text, parser) if req.parse_tools else (choice.text, [])
    finish = "tool_calls" if calls and choice.finish_reason != "length" else choice.finish_reason
    return content, calls, finish


def chat_completion(req: GenRequest, id: str, created: int, choices: list[Choice], usage: dict, parser: str) -> dict:
    """The `chat.completion` response."""
    out = []
    for choice in choices:
        content, calls, finish = _assistant_turn(req, choice, parser)
        message = {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}
        out.append({"index": choice.index, "message": message, "finish_reason": finish,
                    "logprobs": _chat_logprobs(req, choice)})
    return {"id": id, "object": "chat.completion", "created": created, "model": req.model, "choices": out,
            "usage": usage}


def chat_chunks(req: GenRequest, id: str, created: int, choices: list[Choice], usage: dict, parser: str) -> list[dict]:
    """The `chat.completion.chunk`s of a streamed response: per choice, the role (with content ""
    or, for a reply that is only tool calls, null, as OpenAI streams them), the content (if any,
    with the log-probs), the tool calls (if any), then the finish reason; last, with
    `include_usage`, a chunk with no choices and the usage (the others then carry usage null)."""
    head = {"id": id, "object": "chat.completion.chunk", "created": created, "model": req.model}
    tail = {"usage": None} if req.include_usage else {}

    def chunk(index: int, delta: dict, finish: str | None = None, logprobs: dict | None = None) -> dict:
        entry = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        return {**head, "choices": [entry], **tail}

    chunks = []
    for choice in choices:
        content, calls, finish = _assistant_turn(req, choice, parser)
        logprobs = _chat_logprobs(req, choice)  # on the first chunk after the role's
        deltas = [{"content": content}] if content else []
        if calls:
            deltas.append({"tool_calls": [{"index": k, **call} for k, call in enumerate(calls)]})
        chunks.append(chunk(choice.index, {"role": "assistant", "content": "" if content is not None else None}))
        for delta in deltas:
            chunks.append(chunk(choice.index, delta, logprobs=logprobs))
            logprobs = None
        chunks.append(chunk(choice.index, {}, finish, logprobs))
    if req.include_usage:
        chunks.append({**head, "choices": [], "usage": usage})
    return chunks


def _text_choice(req: GenRequest, choice: Choice) -> dict:
    """A `text_completion` choice; log-probs with each token's offset in the reply's text."""
    logprobs = None
    if req.logprobs:
        offsets, at = [], 0
        for token in choice.token_texts:
            offsets.append(at)
            at += len(token)
        logprobs = {"tokens": list(choice.token_texts), "token_logprobs": [_logprob(x) for x in choice.logprobs],
                    "top_logprobs": None, "text_offset": offsets}
    return {"index": choice.index, "text": choice.text, "finish_reason": choice.finish_reason, "logprobs": logprobs}


def text_completion(req: GenRequest, id: str, created: int, choices: list[Choice], usage: dict) -> dict:
    """The `text_completion` response."""
    return {"id": id, "object": "text_completion", "created": created, "model": req.model,
            "choices": [_text_choice(req, choice) for choice in choices], "usage": usage}


def text_chunks(req: GenRequest, id: str, created: int, choices: list[Choice], usage: dict) -> list[dict]:
    """The chunks of a streamed `text_completion`: one per choice, whole (its text, finish reason
    and log-probs: every chunk is a valid `Completion`), then with `include_usage` one with no
    choices and the usage (the others then carry usage null)."""
    head = {"id": id, "object": "text_completion", "created": created, "model": req.model}
    tail = {"usage": None} if req.include_usage else {}
    chunks = [{**head, "choices": [_text_choice(req, choice)], **tail} for choice in choices]
    if req.include_usage:
        chunks.append({**head, "choices": [], "usage": usage})
    return chunks


def sse(chunks: list[dict]) -> Iterator[bytes]:
    """Server-sent events: `data: <json>` per chunk, then `data: [DONE]` (ASCII JSON, so any
    text, even an unpaired surrogate echoed from a request, encodes).

    >>> list(sse([{"a": "é"}]))
    [b'data: {"a": "\\\\u00e9"}\\n\\n', b'data: [DONE]\\n\\n']
    """
    for chunk in chunks:
        yield b"data: " + json.dumps(chunk).encode("ascii") + b"\n\n"
    yield b"data: [DONE]\n\n"
