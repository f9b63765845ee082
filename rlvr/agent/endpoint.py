"""The OpenAI-compatible endpoint served from the rollout engines, as a FastAPI app.

    POST /v1/chat/completions      messages (+ tools) -> the chat template -> the engines
    POST /v1/completions           a text or token-id prompt -> the engines
    GET  /v1/models                the served model
    GET  /v1/episodes/next         an outside agent takes an episode: its id and data row (204: none)
    POST /v1/episodes/{id}/reward  closes it: {"reward": float|null, "final": str|null, "error": str|null}

A call belongs to an episode when it names one: the `X-Rlvr-Episode: <id>` header (the
client rlvr hands an in-process agent sets it) or the model name `rlvr:<id>`. Such a call
is captured for training (`rlvr.agent.board`) and samples as the run samples: the
recipe's `rollout.temperature` / `top_p` / `top_k` (greedy in evaluations) and the
episode's seed, whatever the request asks, so the trainer's log-probs are those of the
distribution that sampled; `max_tokens` is capped at `rollout.max_tokens`. A call without
an episode is served as asked and not captured. Request fields: `rlvr.agent.protocol`.

Hardening: bodies over 4 MiB are refused (413); a malformed request is a 400 with an
OpenAI error object, never a 5xx; with a token every route needs `Authorization: Bearer
<token>` (the `openai` client's `api_key`); an engine failure is a 503 for the requests it
served; a call for an episode that is closed or past its deadline is a 404.
"""

from __future__ import annotations

import hmac
import json
import math
import time
import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from rlvr.agent import protocol
from rlvr.agent.board import Call
from rlvr.agent.dispatch import EngineError
from rlvr.agent.protocol import ApiError, Choice, GenRequest
from rlvr.types import SamplingSpec

MAX_BODY_BYTES = 4 << 20
EPISODE_HEADER = "x-rlvr-episode"


@dataclass
class Served:
    """What the endpoint serves: the tokenizer and template variables prompts are rendered
    with, the tool-call parser, the run's sampling for episode calls (`sampling`; its
    `max_tokens` caps every call), the engines' max length and the model's name."""

    tokenizer: object
    parser: str
    sampling: SamplingSpec
    max_len: int | None = None
    template_kwargs: dict = field(default_factory=dict)
    model_name: str = "rlvr"


def create_agent_app(board, dispatcher, served: Served, token: str | None) -> FastAPI:
    app = FastAPI(title="rlvr agent endpoint", description="OpenAI-compatible completions from the rollout engines.")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception) -> JSONResponse:
        print(f"[rlvr] agent endpoint: {request.url.path} failed: {type(e).__name__}: {e}", flush=True)
        return JSONResponse(ApiError(500, "internal error in the rlvr endpoint", type="server_error").body(), 500)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token is not None and request.url.path != "/healthz":
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                return JSONResponse(ApiError(401, "missing or wrong token: send `Authorization: Bearer <token>`",
                                             type="authentication_error").body(), 401)
        return await call_next(request)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": served.model_name, "object": "model", "created": 0,
                                            "owned_by": "rlvr"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = protocol.parse_chat_request(await read_json(request))
        prompt_ids = render_chat(served, req)
        return await serve(board, dispatcher, served, req, prompt_ids, episode_of(request, req))

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = protocol.parse_completion_request(await read_json(request))
        prompt_ids = encode_prompt(served.tokenizer, req.prompt)
        return await serve(board, dispatcher, served, req, prompt_ids, episode_of(request, req))

    @app.get("/v1/episodes/next")
    async def next_episode() -> Response:
        e = board.take()
        if e is None:
            return Response(status_code=204)
        return JSONResponse({"episode_id": e.id, "model": f"rlvr:{e.id}", "row": e.row(), "timeout_s": board.timeout_s})

    @app.post("/v1/episodes/{episode_id}/reward")
    async def reward(episode_id: str, request: Request) -> dict:
        reward, final, error = parse_reward(await read_json(request))
        state = board.close(episode_id, reward, final, error)
        if state == "unknown":
            raise ApiError(404, f"no open episode {episode_id[:80]!r}", "episode_id", code="episode_not_found")
        if state != "closed":
            raise ApiError(409, f"episode {episode_id[:80]!r} is {state}", "episode_id", code="episode_closed")
        return {"episode_id": episode_id, "status": state}

    return app


async def read_json(request: Request) -> object:
    """The request body as JSON, at most MAX_BODY_BYTES (413 beyond), else a 400."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"the request body is over {MAX_BODY_BYTES >> 20} MiB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is over {MAX_BODY_BYTES >> 20} MiB")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {str(e)[:120]}") from None


def episode_of(request: Request, req: GenRequest) -> str | None:
    header = request.headers.get(EPISODE_HEADER)
    if header is not None:
        header = protocol.episode_of(f"rlvr:{header}")
        if req.episode is not None and req.episode != header:
            raise ApiError(400, "the X-Rlvr-Episode header and the model name name different episodes", "model")
        return header
    return req.episode


def parse_reward(body: object) -> tuple[float | None, str | None, str | None]:
    if not isinstance(body, dict):
        raise ApiError(400, 'the body must be a JSON object like {"reward": 1.0}')
    reward, final, error = body.get("reward"), body.get("final"), body.get("error")
    if reward is not None and (isinstance(reward, bool) or not isinstance(reward, (int, float))
                               or not math.isfinite(reward)):
        raise ApiError(400, f"reward must be a finite number or null, got {type(reward).__name__}", "reward")
    for name, value in (("final", final), ("error", error)):
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f"{name} must be a string or null, got {type(value).__name__}", name)
    return (None if reward is None else float(reward)), final, (error[:500] if error else None)


def render_chat(served: Served, req: GenRequest) -> list[int]:
    """The prompt token ids of a chat request, rendered as rlvr renders data prompts."""
    tok = served.tokenizer
    try:
        text = tok.apply_chat_template(req.messages, tools=req.tools or None, add_generation_prompt=True,
                                       tokenize=False, **served.template_kwargs)
    except Exception as e:  # noqa: BLE001 - a template that cannot render these messages is the request's problem
        message = " ".join(str(e).split())[:200]
        raise ApiError(400, f"the chat template cannot render these messages: {type(e).__name__}: {message}",
                       "messages") from None
    return tok(text, add_special_tokens=False)["input_ids"]


def encode_prompt(tokenizer, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    vocab = len(tokenizer)
    if any(t >= vocab for t in prompt):
        raise ApiError(400, f"token ids must be below the vocabulary size {vocab}", "prompt")
    return list(prompt)


async def serve(board, dispatcher, served: Served, req: GenRequest, prompt_ids: list[int], episode_id: str | None):
    """Sample the request's choices, capture them for its episode, and answer."""
    spec, messages = sampling(board, served, req, len(prompt_ids), episode_id), req.messages
    try:
        completions = await dispatcher.generate(prompt_ids, spec)
    except EngineError as e:
        raise ApiError(503, f"the engine could not serve this request: {str(e)[:200]}", type="server_error") from None
    calls = [cut_at_stop(served.tokenizer, prompt_ids, c, req.stop, messages) for c in completions]
    if episode_id is not None:
        board.record(episode_id, calls)
    choices = [Choice(k, c.text, c.finish_reason,
                      [served.tokenizer.decode([t]) for t in c.token_ids] if req.logprobs else [], c.logprobs)
               for k, c in enumerate(calls)]
    usage = protocol.usage(len(prompt_ids), sum(len(c.token_ids) for c in calls))
    rid, created = f"{'chatcmpl' if req.kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}", int(time.time())
    if req.kind == "chat":
        if req.stream:
            chunks = protocol.chat_chunks(req, rid, created, choices, usage, served.parser)
            return StreamingResponse(protocol.sse(chunks), media_type="text/event-stream")
        return JSONResponse(protocol.chat_completion(req, rid, created, choices, usage, served.parser))
    if req.stream:
        return StreamingResponse(protocol.sse(protocol.text_chunks(req, rid, created, choices, usage)),
                                 media_type="text/event-stream")
    return JSONResponse(protocol.text_completion(req, rid, created, choices, usage))


def sampling(board, served: Served, req: GenRequest, prompt_len: int, episode_id: str | None) -> SamplingSpec:
    """How the request samples: an episode call as the run samples (with the episode's seed),
    any other as asked; `max_tokens` capped by the run's and by the engines' max length."""
    run = served.sampling
    room = (served.max_len - prompt_len) if served.max_len else run.max_tokens
    if room < 1:
        raise ApiError(400, f"the prompt is {prompt_len} tokens: no room left in the model's {served.max_len}-token "
                       "context", "messages" if req.kind == "chat" else "prompt", code="context_length_exceeded")
    max_tokens = max(1, min(req.max_tokens or run.max_tokens, run.max_tokens, room))
    if episode_id is None:
        return SamplingSpec(n=req.n, max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                            top_k=req.top_k, seed=req.seed)
    try:
        e, seed = board.start_call(episode_id)
    except KeyError:
        raise ApiError(404, f"episode {episode_id[:80]!r} is not open (unknown, closed or past its deadline)",
                       "model", code="episode_not_open") from None
    return SamplingSpec(n=req.n, max_tokens=max_tokens, temperature=0.0 if e.greedy else run.temperature,
                        top_p=run.top_p, top_k=run.top_k, seed=seed)


def cut_at_stop(tokenizer, prompt_ids: list[int], c, stops: list[str], messages) -> Call:
    """One choice as captured: with `stop` strings, cut after the first token whose text
    completes one (the text is cut before the stop string, as OpenAI does)."""
    token_ids, logprobs, text, finish = list(c.token_ids), list(c.logprobs), c.text, c.finish_reason
    at = protocol.find_stop(text, stops) if stops else None
    if at is not None:
        k = next((k for k in range(1, len(token_ids) + 1)
                  if protocol.find_stop(tokenizer.decode(token_ids[:k], skip_special_tokens=True), stops) is not None),
                 len(token_ids))
        token_ids, logprobs, text, finish = token_ids[:k], logprobs[:k], text[:at], "stop"
    return Call(list(prompt_ids), token_ids, logprobs, c.weight_version, finish, text, messages)
