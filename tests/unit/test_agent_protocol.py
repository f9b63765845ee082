"""The agent endpoint's OpenAI protocol (`rlvr.agent.protocol`), with no server: requests read into
a `GenRequest` (every rule, and a fuzz of hostile bodies that may only raise ApiError 400), the
responses validated by the `openai` package's own models, its stream accumulator and its client
(over an in-process transport), tool-call splitting, stop strings and SSE framing."""

from __future__ import annotations

import doctest
import importlib
import json
import math
import random
import re

import pytest

from rlvr.agent.protocol import (ApiError, Choice, GenRequest, chat_chunks, chat_completion, episode_of, find_stop,
                                 parse_chat_request, parse_completion_request, split_tool_calls, sse, text_chunks,
                                 text_completion, usage)
from rlvr.tools.calls import parse_hermes

USER = {"role": "user", "content": "What is 2*3?"}
CALC = {"type": "function", "function": {
    "name": "calc", "description": "Evaluate arithmetic.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}
HERMES_CALL = '<tool_call>\n{"name": "calc", "arguments": {"expression": "2*3"}}\n</tool_call>'


def chat(**fields) -> dict:
    return {"model": "rlvr:ep-1", "messages": [USER], **fields}


def completion(**fields) -> dict:
    return {"model": "Qwen/Qwen3-0.6B", "prompt": "2*3 =", **fields}


def rejected(parse, body) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(body)
    assert info.value.status == 400
    return info.value


# ---- chat requests: what parses ----


def test_minimal_chat_request_gets_the_defaults():
    req = parse_chat_request({"model": "Qwen/Qwen3-0.6B", "messages": [USER]})
    assert req == GenRequest(kind="chat", model="Qwen/Qwen3-0.6B", episode=None, messages=[USER])
    assert (req.n, req.temperature, req.top_p, req.top_k, req.max_tokens, req.stop, req.seed) == (
        1, 1.0, 1.0, -1, None, [], None)
    assert not (req.logprobs or req.stream or req.include_usage) and req.parse_tools and req.tools is None


def test_every_supported_sampling_field_is_read():
    req = parse_chat_request(chat(n=4, temperature=0, top_p=0.95, top_k=20, max_tokens=100, seed=-3,
                                  stop=["\n\n", "END"], logprobs=True, top_logprobs=0, stream=True,
                                  stream_options={"include_usage": True}))
    assert (req.episode, req.n, req.temperature, req.top_p, req.top_k, req.max_tokens, req.seed, req.stop) == (
        "ep-1", 4, 0.0, 0.95, 20, 100, -3, ["\n\n", "END"])
    assert req.logprobs and req.stream and req.include_usage
    assert isinstance(req.temperature, float) and isinstance(req.top_p, float)


def test_max_completion_tokens_wins_over_max_tokens():
    assert parse_chat_request(chat(max_tokens=10, max_completion_tokens=20)).max_tokens == 20
    assert parse_chat_request(chat(max_completion_tokens=20)).max_tokens == 20
    assert parse_chat_request(chat(max_tokens=10, max_completion_tokens=None)).max_tokens == 10


def test_stop_may_be_one_string_or_null():
    assert parse_chat_request(chat(stop="\n")).stop == ["\n"]
    assert parse_chat_request(chat(stop=None)).stop == []


def test_messages_become_template_ready():
    messages = [
        {"role": "developer", "content": "Be brief.", "name": "ops"},
        {"role": "system", "content": None},
        {"role": "user", "content": [{"type": "text", "text": "2*"}, {"type": "text", "text": "3?"}], "name": "ann",
         "audio": None, "weird": {"x": 1}},
        {"role": "assistant", "content": None, "refusal": None, "name": "bot", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"expression": "2*3"}'}},
            {"function": {"name": "calc", "arguments": {"expression": "1"}}},
            {"id": "c3", "type": "function", "function": {"name": "now", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "calc", "content": [{"type": "text", "text": "6"}]},
        {"role": "assistant", "content": "It is 6.", "tool_calls": []},
    ]
    assert parse_chat_request(chat(messages=messages)).messages == [
        {"role": "system", "content": "Be brief.", "name": "ops"},
        {"role": "system", "content": ""},
        {"role": "user", "content": "2*3?", "name": "ann"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": {"expression": "2*3"}}},
            {"id": "call_3_1", "type": "function", "function": {"name": "calc", "arguments": {"expression": "1"}}},
            {"id": "c3", "type": "function", "function": {"name": "now", "arguments": {}}}]},
        {"role": "tool", "content": "6", "tool_call_id": "c1", "name": "calc"},
        {"role": "assistant", "content": "It is 6."},
    ]


def test_tools_are_normalised_and_tool_choice_none_turns_parsing_off():
    req = parse_chat_request(chat(tools=[CALC, {"type": "function", "function": {"name": "now", "strict": True}}],
                                  tool_choice="none"))
    assert req.tools == [CALC, {"type": "function", "function": {"name": "now", "description": "",
                                                                 "parameters": {"type": "object", "properties": {}}}}]
    assert not req.parse_tools
    assert parse_chat_request(chat(tools=[CALC], tool_choice="auto")).parse_tools
    assert parse_chat_request(chat(tools=[])).tools is None


def test_accepted_and_ignored_fields_and_neutral_values_parse():
    body = chat(user="u1", metadata={"k": "v"}, store=False, parallel_tool_calls=False, service_tier="auto",
                reasoning_effort="low", prediction=None, modalities=["text"], frequency_penalty=0, presence_penalty=0.0,
                logit_bias={}, response_format={"type": "text"}, audio=None, functions=[], function_call=None,
                top_logprobs=None, extra_body_thing={"nested": [1, 2]}, chat_template_kwargs={"enable_thinking": False})
    assert parse_chat_request(body) == parse_chat_request(chat())


def test_episode_of():
    assert episode_of("rlvr:ep_1.a-b") == "ep_1.a-b"
    assert episode_of("rlvr:" + "a" * 128) == "a" * 128
    assert episode_of("gpt-4o") is None and episode_of("rlvr") is None and episode_of("RLVR:x") is None
    for bad in ("rlvr:", "rlvr:a/b", "rlvr:a b", "rlvr:" + "a" * 129, "rlvr:é", "rlvr:a\n"):
        with pytest.raises(ApiError) as info:
            episode_of(bad)
        assert (info.value.status, info.value.param) == (400, "model")


# ---- chat requests: what is refused, and where ----


def _with_message(**fields) -> dict:
    return chat(messages=[USER, {"role": "assistant", "content": "ok", **fields}])


def _call(**function) -> dict:
    return _with_message(tool_calls=[{"id": "c", "type": "function", "function": {"name": "calc", **function}}])


@pytest.mark.parametrize("body, param", [
    (chat(model=None), "model"), ({"messages": [USER]}, "model"), (chat(model=""), "model"), (chat(model=3), "model"),
    (chat(model="rlvr:../x"), "model"), (chat(model="m\ud800"), "model"),
    ({"model": "m"}, "messages"), (chat(messages=[]), "messages"), (chat(messages="hi"), "messages"),
    (chat(messages=[USER] * 4097), "messages"), (chat(messages=[USER, "hi"]), "messages[1]"),
    (chat(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"content": "x"}]), "messages[0].role"),
    (chat(messages=[{"role": ["user"], "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     "messages[0].content"),
    (chat(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": ["text"]}]), "messages[0].content[0]"),
    (chat(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]), "messages[0].content[0].text"),
    (chat(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content[0].text"),
    (chat(messages=[{"role": "user", "content": "bad \udcff"}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": "x", "name": 7}]), "messages[0].name"),
    (chat(messages=[{"role": "tool", "content": "6", "tool_call_id": 1}]), "messages[0].tool_call_id"),
    (_with_message(tool_calls={"id": "c"}), "messages[1].tool_calls"),
    (_with_message(tool_calls=["calc"]), "messages[1].tool_calls[0]"),
    (_with_message(tool_calls=[{"type": "code", "function": {"name": "f"}}]), "messages[1].tool_calls[0].type"),
    (_with_message(tool_calls=[{"type": "function"}]), "messages[1].tool_calls[0].function"),
    (_with_message(tool_calls=[{"id": 5, "function": {"name": "f"}}]), "messages[1].tool_calls[0].id"),
    (_call(name=None), "messages[1].tool_calls[0].function.name"),
    (_with_message(tool_calls=[{"function": {"name": ""}}]), "messages[1].tool_calls[0].function.name"),
    (_call(arguments="{not json"), "messages[1].tool_calls[0].function.arguments"),
    (_call(arguments="[1, 2]"), "messages[1].tool_calls[0].function.arguments"),
    (_call(arguments='"x"'), "messages[1].tool_calls[0].function.arguments"),
    (_call(arguments="[" * 100000), "messages[1].tool_calls[0].function.arguments"),
    (_call(arguments=[1]), "messages[1].tool_calls[0].function.arguments"),
    (_call(arguments=3), "messages[1].tool_calls[0].function.arguments"),
    (chat(tools={"calc": CALC}), "tools"), (chat(tools=[CALC] * 129), "tools"), (chat(tools=["calc"]), "tools[0]"),
    (chat(tools=[{"type": "retrieval"}]), "tools[0].type"), (chat(tools=[{"type": "function"}]), "tools[0].function"),
    (chat(tools=[{"function": {"description": "x"}}]), "tools[0].function.name"),
    (chat(tools=[{"function": {"name": "f", "description": 1}}]), "tools[0].function.description"),
    (chat(tools=[{"function": {"name": "f", "parameters": "{}"}}]), "tools[0].function.parameters"),
    (chat(tool_choice="required"), "tool_choice"), (chat(tool_choice="any"), "tool_choice"),
    (chat(tool_choice={"type": "function", "function": {"name": "calc"}}), "tool_choice"),
    (chat(tool_choice=True), "tool_choice"),
    (chat(n=0), "n"), (chat(n=17), "n"), (chat(n=True), "n"), (chat(n=2.0), "n"), (chat(n="2"), "n"),
    (chat(temperature=-0.1), "temperature"), (chat(temperature=2.5), "temperature"),
    (chat(temperature="1"), "temperature"),
    (chat(temperature=math.nan), "temperature"), (chat(temperature=math.inf), "temperature"),
    (chat(temperature=10**400), "temperature"), (chat(temperature=False), "temperature"),
    (chat(top_p=0), "top_p"), (chat(top_p=1.01), "top_p"), (chat(top_p=-math.inf), "top_p"),
    (chat(top_k=0), "top_k"), (chat(top_k=-2), "top_k"), (chat(top_k=1.5), "top_k"), (chat(top_k=2**31), "top_k"),
    (chat(max_tokens=0), "max_tokens"), (chat(max_tokens=1.5), "max_tokens"), (chat(max_tokens=2**40), "max_tokens"),
    (chat(max_completion_tokens=-1), "max_completion_tokens"),
    (chat(max_completion_tokens="9"), "max_completion_tokens"),
    (chat(stop=""), "stop"), (chat(stop=["a"] * 5), "stop"), (chat(stop=5), "stop"), (chat(stop=["a", ""]), "stop[1]"),
    (chat(stop=["a", None]), "stop[1]"), (chat(stop=[["a"]]), "stop[0]"),
    (chat(seed="1"), "seed"), (chat(seed=2**64), "seed"), (chat(seed=1.0), "seed"),
    (chat(logprobs=1), "logprobs"), (chat(logprobs="true"), "logprobs"),
    (chat(top_logprobs=1), "top_logprobs"), (chat(top_logprobs=-1), "top_logprobs"),
    (chat(top_logprobs="0"), "top_logprobs"),
    (chat(stream="yes"), "stream"), (chat(stream_options=True), "stream_options"),
    (chat(stream_options={"include_usage": 1}), "stream_options.include_usage"),
    (chat(frequency_penalty=0.5), "frequency_penalty"), (chat(presence_penalty=-1), "presence_penalty"),
    (chat(presence_penalty=math.nan), "presence_penalty"), (chat(frequency_penalty="0"), "frequency_penalty"),
    (chat(logit_bias={"50256": -100}), "logit_bias"), (chat(logit_bias=[1]), "logit_bias"),
    (chat(response_format={"type": "json_object"}), "response_format"),
    (chat(response_format="text"), "response_format"),
    (chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}), "response_format"),
    (chat(audio={"voice": "alloy", "format": "wav"}), "audio"), (chat(prediction={"type": "content"}), "prediction"),
    (chat(modalities=["text", "audio"]), "modalities"), (chat(functions=[{"name": "f"}]), "functions"),
    (chat(function_call="auto"), "function_call"),
])
def test_chat_rejections_name_the_field(body, param):
    error = rejected(parse_chat_request, body)
    assert error.param == param, error.message
    assert error.body() == {"error": {"message": error.message, "type": "invalid_request_error", "param": param,
                                      "code": None}}


@pytest.mark.parametrize("body", [None, [], "{}", 3, 2.5, True, [{"model": "m"}]])
def test_a_body_that_is_not_an_object_is_refused(body):
    for parse in (parse_chat_request, parse_completion_request):
        error = rejected(parse, body)
        assert error.param is None and error.message.startswith("the request body must be a JSON object")


def test_messages_say_what_was_expected_and_what_came():
    assert rejected(parse_chat_request, chat(n="3")).message == "n must be an integer, got a string"
    assert rejected(parse_chat_request, chat(top_p=0)).message == "top_p must be in (0, 1], got 0"
    assert "only text content parts are supported" in rejected(
        parse_chat_request, chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}])).message
    assert rejected(parse_chat_request, chat(top_logprobs=5)).message == (
        "top_logprobs is not supported: only the sampled token's log-prob is returned")
    assert rejected(parse_chat_request, chat(tool_choice="required")).message == (
        'tool_choice "required" is not supported: only "auto" and "none"')
    assert "sampling distribution the trainer assumes" in rejected(parse_chat_request, chat(presence_penalty=1)).message
    huge = rejected(parse_chat_request, chat(messages=[{"role": "x" * 10000, "content": ""}])).message
    assert len(huge) < 300 and "x" * 70 in huge and "x" * 81 not in huge
    assert "1329 bits" in rejected(parse_chat_request, chat(temperature=10**400)).message


# ---- completion requests ----


def test_completion_prompts_in_every_accepted_form():
    assert parse_completion_request(completion()).prompt == "2*3 ="
    assert parse_completion_request(completion(prompt=["2*3 ="])).prompt == "2*3 ="
    assert parse_completion_request(completion(prompt=[1, 2, 0])).prompt == [1, 2, 0]
    assert parse_completion_request(completion(prompt=[[5, 2**31 - 1]])).prompt == [5, 2**31 - 1]


def test_completion_fields():
    req = parse_completion_request(completion(n=2, max_tokens=7, temperature=0.5, top_k=5, stop="\n", seed=1,
                                              stream=True, stream_options={"include_usage": True}, logprobs=0,
                                              echo=False, suffix=None, best_of=1, user="u", frequency_penalty=0,
                                              logit_bias=None))
    assert (req.kind, req.episode, req.n, req.max_tokens, req.temperature, req.top_k, req.stop, req.seed) == (
        "completion", None, 2, 7, 0.5, 5, ["\n"], 1)
    assert req.logprobs and req.stream and req.include_usage and req.messages is None
    assert not parse_completion_request(completion(logprobs=None)).logprobs
    assert parse_completion_request(completion(model="rlvr:e")).episode == "e"
    assert parse_completion_request(completion(max_completion_tokens=0)).max_tokens is None  # not a completions field


@pytest.mark.parametrize("body, param", [
    ({"model": "m"}, "prompt"), (completion(prompt=""), "prompt"), (completion(prompt=[]), "prompt"),
    (completion(prompt=[""]), "prompt[0]"), (completion(prompt=[[]]), "prompt[0]"), (completion(prompt=3), "prompt"),
    (completion(prompt=["a", "b"]), "prompt"), (completion(prompt=[[1], [2]]), "prompt"),
    (completion(prompt=[1, "a"]), "prompt[1]"), (completion(prompt=[1, -1]), "prompt[1]"),
    (completion(prompt=[2**31]), "prompt[0]"), (completion(prompt=[True]), "prompt[0]"),
    (completion(prompt=[[1, 2.0]]), "prompt[0][1]"), (completion(prompt={"text": "x"}), "prompt"),
    (completion(echo=True), "echo"), (completion(echo="no"), "echo"), (completion(suffix="x"), "suffix"),
    (completion(best_of=2), "best_of"), (completion(best_of=0), "best_of"),
    (completion(logprobs=5), "logprobs"), (completion(logprobs=True), "logprobs"),
    (completion(logprobs=-1), "logprobs"),
    (completion(n=0), "n"), (completion(temperature=3), "temperature"), (completion(top_p=math.nan), "top_p"),
    (completion(top_k=0), "top_k"), (completion(max_tokens=0), "max_tokens"), (completion(stop=["a"] * 5), "stop"),
    (completion(seed=0.5), "seed"), (completion(stream=1), "stream"), (completion(stream_options=[]), "stream_options"),
    (completion(presence_penalty=0.1), "presence_penalty"), (completion(logit_bias={"1": 1}), "logit_bias"),
    (completion(model=""), "model"), (completion(model="rlvr:a b"), "model"),
])
def test_completion_rejections_name_the_field(body, param):
    assert rejected(parse_completion_request, body).param == param


def test_one_prompt_per_request():
    error = rejected(parse_completion_request, completion(prompt=["a", "b"]))
    assert error.message.startswith("one prompt per request")


# ---- fuzz: hostile bodies raise ApiError 400 or parse, nothing else ----

FIELDS = ["model", "messages", "role", "content", "type", "text", "tool_calls", "id", "function", "name", "arguments",
          "tools", "description", "parameters", "tool_choice", "n", "temperature", "top_p", "top_k", "max_tokens",
          "max_completion_tokens", "stop", "seed", "logprobs", "top_logprobs", "stream", "stream_options",
          "include_usage", "frequency_penalty", "presence_penalty", "logit_bias", "response_format", "audio",
          "prediction", "modalities", "functions", "function_call", "prompt", "echo", "suffix", "best_of",
          "tool_call_id", "user", "metadata", "image_url"]
STRINGS = ["", "auto", "none", "required", "text", "function", "json_object", "user", "assistant", "tool", "system",
           "developer", "image_url", "rlvr:ep1", "rlvr:", "rlvr:a/b", "m", "{}", '{"a": 1}', "[1]", "null", "not json",
           "1e999", '{"a": NaN}', "\ud800", "é\u0000\n", "<tool_call>", "x" * 100000, "[" * 50000, '{"a":' * 50000,
           "9" * 5000]
NUMBERS = [0, 1, -1, 2, 16, 17, 2**31, 2**64, 10**400, -(10**400), 0.0, -0.0, 0.5, 1.5, 2.5, 1e308, -1e-308,
           math.nan, math.inf, -math.inf]


def _deep(kind: type, depth: int) -> object:
    value = kind()
    for _ in range(depth):
        value = [value] if kind is list else {"messages": value}
    return value


DEEP = [_deep(list, 5000), _deep(dict, 5000), _deep(list, 50)]


def random_value(rng: random.Random, depth: int = 0) -> object:
    """Any JSON-like value: scalars of every type, containers keyed by the real field names."""
    roll = rng.random()
    if roll < 0.1:
        return rng.choice([None, True, False])
    if roll < 0.3:
        return rng.choice(NUMBERS) if rng.random() < 0.7 else rng.randint(-(2**70), 2**70)
    if roll < 0.5 or depth >= 5:
        return rng.choice(STRINGS + FIELDS)
    if roll < 0.55:
        return rng.choice(DEEP)
    if roll < 0.75:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(FIELDS): random_value(rng, depth + 1) for _ in range(rng.randint(0, 6))}


def valid_body(parse) -> dict:
    """A request using every field (for both routes; completions take logprobs as a count), fresh
    each time: mutations change it in place."""
    logprobs = True if parse is parse_chat_request else 0
    return json.loads(json.dumps(chat(messages=[{"role": "system", "content": "s"}, USER,
                          {"role": "assistant", "content": None, "tool_calls": [
                              {"id": "c", "type": "function", "function": {"name": "calc", "arguments": '{"a": 1}'}}]},
                          {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "6"}]}],
                tools=[CALC], tool_choice="auto", n=2, temperature=0.7, top_p=0.9, top_k=5, max_tokens=9, stop=["x"],
                seed=1, logprobs=logprobs, stream=True, stream_options={"include_usage": True}, logit_bias={},
                response_format={"type": "text"}, prompt=[[1, 2]], echo=False, best_of=1, suffix=None)))


def _paths(value: object, path: tuple = ()) -> list[tuple]:
    """Every place in a body a value could be replaced (down to 8 levels)."""
    out = [path]
    if len(path) >= 8:
        return out
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*path, i))
    return out


def mutate(rng: random.Random, parse) -> object:
    body = valid_body(parse)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(body))
        if not path:
            return random_value(rng)
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and rng.random() < 0.2:
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = random_value(rng)
    return body


def _check_outcome(parse, body) -> None:
    try:
        req = parse(body)
    except ApiError as e:
        assert e.status == 400 and e.type == "invalid_request_error"
        assert e.param is None or isinstance(e.param, str)
        text = json.dumps(e.body(), ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
        assert "\n" not in e.message and 0 < len(e.message) < 300, e.message
        return
    assert isinstance(req, GenRequest)
    if req.messages is not None:
        assert all(isinstance(m["content"], str) and m["role"] in ("system", "user", "assistant", "tool")
                   for m in req.messages)
    # whatever was accepted gives a response a strict-JSON, UTF-8 server can send
    choices = [Choice(0, "hi " + HERMES_CALL, "stop", ["hi"], [-math.inf])]
    for out in (chat_completion(req, "id", 0, choices, usage(1, 1), "hermes"),
                text_completion(req, "id", 0, choices, usage(1, 1))):
        json.dumps(out, ensure_ascii=False, allow_nan=False).encode("utf-8")


def random_body(rng: random.Random) -> object:
    """Mostly an object of real field names with random values; often with a plausible model,
    messages of random message-like objects, or a prompt, so the checks past those are reached."""
    if rng.random() < 0.2:
        return random_value(rng)
    body = {rng.choice(FIELDS): random_value(rng) for _ in range(rng.randint(0, 12))}
    if rng.random() < 0.7:
        body["model"] = rng.choice(["m", "rlvr:e", random_value(rng)])
    if rng.random() < 0.6:
        body["messages"] = [{"role": rng.choice(["user", "assistant", "tool", "developer", random_value(rng)]),
                             **{rng.choice(FIELDS): random_value(rng, depth=2) for _ in range(rng.randint(0, 4))}}
                            for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.5:
        body["prompt"] = rng.choice(["p", [1, 2], [[3]], random_value(rng, depth=3)])
    return body


def test_fuzz_random_bodies_raise_only_api_errors():
    rng = random.Random(20240611)
    for _ in range(1500):
        body = random_body(rng)
        for parse in (parse_chat_request, parse_completion_request):
            _check_outcome(parse, body)


def test_fuzz_mutated_valid_requests_raise_only_api_errors():
    rng = random.Random(7)
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(1500):
        for parse in (parse_chat_request, parse_completion_request):
            body = mutate(rng, parse)
            _check_outcome(parse, body)
            try:
                parse(body)
                outcomes["parsed"] += 1
            except ApiError:
                outcomes["refused"] += 1
    assert outcomes["parsed"] > 600 and outcomes["refused"] > 600, outcomes  # both sides were exercised


# ---- tool calls, stops, framing ----


def test_split_hermes_calls_out_of_the_text():
    text = f"Let me compute. {HERMES_CALL} and {HERMES_CALL.replace('2*3', '1+1')}\n"
    content, calls = split_tool_calls(text, "hermes")
    assert content == "Let me compute.  and"
    assert [c["function"] for c in calls] == [{"name": "calc", "arguments": '{"expression": "2*3"}'},
                                              {"name": "calc", "arguments": '{"expression": "1+1"}'}]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", c["id"]) and c["type"] == "function" for c in calls)
    assert len({c["id"] for c in calls}) == 2
    assert split_tool_calls(HERMES_CALL, "hermes")[0] is None
    assert split_tool_calls("no calls here ", "hermes") == ("no calls here ", [])


def test_unreadable_calls_stay_in_the_content():
    bad = "<tool_call>{name: calc}</tool_call>"
    content, calls = split_tool_calls(f"{bad} {HERMES_CALL}", "hermes")
    assert content == bad and len(calls) == 1
    assert split_tool_calls(bad, "hermes") == (bad, [])
    content, calls = split_tool_calls('{"name": "calc", "parameters": {"expression": "1"}}; {"name": 3}', "llama3_json")
    assert content == '{"name": 3}' and [c["function"]["name"] for c in calls] == ["calc"]


def test_split_llama3_json():
    text = '<|python_tag|>{"name": "calc", "parameters": {"expression": "2*3"}}; {"name": "now", "parameters": {}}'
    content, calls = split_tool_calls(text, "llama3_json")
    assert content is None
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("calc", {"expression": "2*3"}), ("now", {})]
    assert split_tool_calls("The answer is 6.", "llama3_json") == ("The answer is 6.", [])


def test_split_reads_the_same_hermes_blocks_as_the_rollouts_parser():
    rng = random.Random(3)
    pieces = ["<tool_call>", "</tool_call>", " ", "\n", '{"name": "f", "arguments": {}}', "{bad", "x", '{"name": "g"}']
    for _ in range(500):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        readable = [c for c in parse_hermes(text) if c.error is None]
        assert [c["function"]["name"] for c in split_tool_calls(text, "hermes")[1]] == [c.name for c in readable]


def test_a_call_nested_too_deep_for_json_stays_text():
    deep = "<tool_call>" + "[" * 5000 + "</tool_call>"
    assert split_tool_calls(f"{deep} {HERMES_CALL}", "hermes")[0] == deep
    assert split_tool_calls('{"name": "f", "parameters": ' + "[" * 5000, "llama3_json")[1] == []


def test_unknown_parser_is_a_server_error_not_an_api_error():
    with pytest.raises(ValueError, match="unknown tool-call parser"):
        split_tool_calls("x", "mistral")


def test_find_stop():
    assert find_stop("abc END def\n", ["\n", "END"]) == 4
    assert find_stop("abc", ["x", "y"]) is None
    assert find_stop("abc", []) is None
    assert find_stop("abc", ["", "c"]) == 2


def test_sse_framing():
    frames = list(sse([{"a": 1}, {"b": "é\n"}]))
    assert frames == [b'data: {"a": 1}\n\n', b'data: {"b": "\\u00e9\\n"}\n\n', b"data: [DONE]\n\n"]
    assert list(sse([])) == [b"data: [DONE]\n\n"]


def test_usage():
    assert usage(3, 4) == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


# ---- responses, as the openai package reads them (it comes with vLLM; skipped without it) ----

PLAIN = Choice(0, "It is 6.", "stop", ["It", " is", " 6", "."], [-0.1, -0.2, -math.inf, -0.4])
TOOL = Choice(1, f"Let me use the tool.\n{HERMES_CALL}", "stop", ["Let"], [-1.0])
ONLY_TOOL = Choice(0, HERMES_CALL, "stop")
CUT = Choice(0, f"{HERMES_CALL} and more", "length")


def _chat_req(**fields) -> GenRequest:
    return parse_chat_request(chat(tools=[CALC], **fields))


def test_chat_completion_plain_with_logprobs_validates():
    ChatCompletion = pytest.importorskip("openai.types.chat").ChatCompletion
    out = chat_completion(_chat_req(logprobs=True), "chatcmpl-1", 1700000000, [PLAIN], usage(5, 4), "hermes")
    parsed = ChatCompletion.model_validate(out)
    assert parsed.choices[0].message.content == "It is 6." and parsed.choices[0].message.tool_calls is None
    assert parsed.choices[0].finish_reason == "stop" and parsed.usage.total_tokens == 9 and parsed.model == "rlvr:ep-1"
    lp = parsed.choices[0].logprobs.content
    assert [t.token for t in lp] == PLAIN.token_texts and lp[2].logprob == -9999.0 and lp[1].bytes == list(b" is")
    assert "tool_calls" not in out["choices"][0]["message"]
    json.dumps(out, allow_nan=False)
    assert chat_completion(_chat_req(), "c", 0, [PLAIN], usage(1, 1), "hermes")["choices"][0]["logprobs"] is None


def test_chat_completion_with_tool_calls_and_n_2_validates():
    ChatCompletion = pytest.importorskip("openai.types.chat").ChatCompletion
    out = chat_completion(_chat_req(n=2), "chatcmpl-2", 1, [ONLY_TOOL, TOOL], usage(5, 30), "hermes")
    parsed = ChatCompletion.model_validate(out)
    first, second = parsed.choices
    assert first.message.content is None and first.finish_reason == "tool_calls"
    assert second.message.content == "Let me use the tool." and second.finish_reason == "tool_calls"
    call = first.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "calc"
    assert isinstance(call.function.arguments, str) and json.loads(call.function.arguments) == {"expression": "2*3"}
    assert first.message.tool_calls[0].id != second.message.tool_calls[0].id


def test_tool_calls_are_not_read_with_tool_choice_none_and_length_stays_length():
    out = chat_completion(_chat_req(tool_choice="none"), "c", 1, [ONLY_TOOL], usage(1, 1), "hermes")
    assert out["choices"][0]["message"] == {"role": "assistant", "content": HERMES_CALL}
    assert out["choices"][0]["finish_reason"] == "stop"
    out = chat_completion(_chat_req(), "c", 1, [CUT], usage(1, 1), "hermes")
    assert out["choices"][0]["finish_reason"] == "length" and out["choices"][0]["message"]["content"] == "and more"


def _accumulate(chunks: list[dict]):
    ChatCompletionStreamState = pytest.importorskip("openai.lib.streaming.chat").ChatCompletionStreamState
    ChatCompletionChunk = pytest.importorskip("openai.types.chat").ChatCompletionChunk
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


def test_chat_chunks_validate_and_accumulate_to_the_whole_response():
    req = _chat_req(n=2, stream=True, stream_options={"include_usage": True}, logprobs=True)
    chunks = chat_chunks(req, "chatcmpl-3", 2, [PLAIN, TOOL], usage(5, 9), "hermes")
    assert all(c["object"] == "chat.completion.chunk" and c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == usage(5, 9)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    tool_deltas = [delta["tool_calls"] for delta in deltas if "tool_calls" in delta]
    assert tool_deltas and all("index" in call for delta in tool_deltas for call in delta)
    final = _accumulate(chunks)
    plain, tool = final.choices
    assert plain.message.content == "It is 6." and plain.finish_reason == "stop"
    assert [t.token for t in plain.logprobs.content] == PLAIN.token_texts
    assert tool.message.content == "Let me use the tool." and tool.finish_reason == "tool_calls"
    assert tool.message.tool_calls[0].function.name == "calc"
    assert json.loads(tool.message.tool_calls[0].function.arguments) == {"expression": "2*3"}
    assert final.usage.total_tokens == 14


def test_chat_chunks_without_usage_carry_no_usage_key():
    chunks = chat_chunks(_chat_req(stream=True), "c", 2, [ONLY_TOOL], usage(1, 1), "hermes")
    assert all("usage" not in c for c in chunks)
    assert [c["choices"][0]["delta"] for c in chunks][::2] == [{"role": "assistant", "content": None}, {}]
    final = _accumulate(chunks)
    assert final.choices[0].message.content is None and final.choices[0].finish_reason == "tool_calls"


def test_text_completion_and_chunks_validate():
    Completion = pytest.importorskip("openai.types").Completion
    req = parse_completion_request(completion(n=2, logprobs=0, stream=True, stream_options={"include_usage": True}))
    choices = [PLAIN, Choice(1, "7", "length", ["7"], [-0.5])]
    out = text_completion(req, "cmpl-1", 3, choices, usage(4, 5))
    parsed = Completion.model_validate(out)
    assert [c.text for c in parsed.choices] == ["It is 6.", "7"] and parsed.choices[1].finish_reason == "length"
    logprobs = parsed.choices[0].logprobs
    assert logprobs.tokens == PLAIN.token_texts and logprobs.text_offset == [0, 2, 5, 7]
    assert logprobs.token_logprobs[2] == -9999.0 and logprobs.top_logprobs is None
    chunks = text_chunks(req, "cmpl-1", 3, choices, usage(4, 5))
    for chunk in chunks:
        Completion.model_validate(chunk)
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "It is 6.7"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 9
    plain = parse_completion_request(completion())
    assert text_completion(plain, "c", 3, choices, usage(1, 1))["choices"][0]["logprobs"] is None
    assert all("usage" not in c for c in text_chunks(plain, "c", 3, choices, usage(1, 1)))


# ---- the openai client, end to end over an in-process transport ----


def _client(seen: list):
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx")

    def handle(request):
        body = json.loads(request.content)
        chat_route = request.url.path.endswith("/chat/completions")
        try:
            req = (parse_chat_request if chat_route else parse_completion_request)(body)
        except ApiError as e:
            return httpx.Response(e.status, json=e.body())
        seen.append(req)
        choices = [TOOL] if chat_route else [PLAIN]
        if req.stream:
            chunks = (chat_chunks(req, "x", 1, choices, usage(3, 4), "hermes") if chat_route
                      else text_chunks(req, "x", 1, choices, usage(3, 4)))
            return httpx.Response(200, content=b"".join(sse(chunks)), headers={"content-type": "text/event-stream"})
        out = (chat_completion(req, "x", 1, choices, usage(3, 4), "hermes") if chat_route
               else text_completion(req, "x", 1, choices, usage(3, 4)))
        return httpx.Response(200, json=out)

    return openai, openai.OpenAI(api_key="unused", base_url="http://rlvr.test/v1", max_retries=0,
                                 http_client=httpx.Client(transport=httpx.MockTransport(handle)))


def test_the_openai_client_runs_unmodified():
    seen = []
    openai, client = _client(seen)
    messages = [{"role": "developer", "content": "Use tools."}, USER,
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "calc", "arguments": '{"expression": "2*3"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "6"}]
    reply = client.chat.completions.create(model="rlvr:ep-9", messages=messages, tools=[CALC], temperature=0.6, seed=3,
                                           max_completion_tokens=64, parallel_tool_calls=False, user="me")
    assert seen[-1].episode == "ep-9"
    assert seen[-1].messages[2]["tool_calls"][0]["function"]["arguments"] == {"expression": "2*3"}
    assert (seen[-1].temperature, seen[-1].seed, seen[-1].max_tokens) == (0.6, 3, 64)
    assert reply.choices[0].message.tool_calls[0].function.name == "calc"

    stream = client.chat.completions.create(model="rlvr:ep-9", messages=[USER], tools=[CALC], stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].usage.total_tokens == 7 and seen[-1].include_usage

    text = client.completions.create(model="m", prompt=[[1, 2, 3]], max_tokens=8, logprobs=0)
    assert text.choices[0].text == "It is 6." and seen[-1].prompt == [1, 2, 3] and seen[-1].logprobs
    streamed = list(client.completions.create(model="m", prompt="x", stream=True))
    assert "".join(c.choices[0].text for c in streamed) == "It is 6."

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="rlvr:ep-9", messages=[USER], top_p=0)
    assert info.value.param == "top_p" and info.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=[USER], tool_choice="required", tools=[CALC])
    assert info.value.param == "tool_choice"


# ---- doctests ----


@pytest.mark.parametrize("module", ["rlvr.agent.protocol", "rlvr.agent.checks", "rlvr.agent.messages"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0
