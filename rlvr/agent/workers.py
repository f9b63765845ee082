"""Agent workers: Ray actors that run the user's agent, `rollout(client, row)`, on episodes.

Each episode gets its own `openai.AsyncOpenAI` client whose `base_url` is the endpoint
and whose every request carries the episode's id (the `X-Rlvr-Episode` header), so every
call the agent makes is captured for that episode, whatever model name it passes. A
worker runs up to `rollout.agent_concurrency` episodes at once (asyncio), each under
`rollout.agent_timeout_s`, and posts each result to the endpoint as an outside agent would
(`POST /v1/episodes/{id}/reward`): its reward and final answer, or the error.

The agent is untrusted: an exception, a timeout or a bad return value fails its episode
only (dropped and counted). An agent that blocks the event loop (sync code that hangs)
cannot be cancelled from inside: the loop sees its episodes pass their deadline, and
`AgentGroup.settle` kills and replaces that worker.
"""

from __future__ import annotations

import math

from rlvr.cluster.logs import actor_class
from rlvr.cluster.remote import one_line, places, wait_all
from rlvr.cluster.workers import split_evenly
from rlvr.types import AgentResult

# Connections a worker opens to the endpoint at most (its episodes share them). httpx's pool
# scans every connection per request: 256 episodes of the calc agent took 4.3 s with 32
# connections, 3.4 s with 64, 4.2 s with 256 (`bench.agent_endpoint`, 2-core CPU).
POOL_CONNECTIONS = 64


def result_body(result: object) -> dict:
    """What an agent's return value posts: a reward (a number), an `AgentResult` or a dict with
    `reward` / `final`, or None (the verifiers' reward only).

    >>> result_body(1), result_body(None), result_body(AgentResult(0.5, "42"))
    ({'reward': 1.0}, {}, {'reward': 0.5, 'final': '42'})
    >>> result_body("yes")["error"]
    'invalid: the agent returned str; return a number, None, an AgentResult or {"reward", "final"}'
    """
    if isinstance(result, AgentResult):
        result = {"reward": result.reward, "final": result.final}
    if result is None:
        return {}
    if isinstance(result, (bool, int, float)):
        result = {"reward": result}
    if not isinstance(result, dict):
        return {"error": f"invalid: the agent returned {type(result).__name__}; "
                         'return a number, None, an AgentResult or {"reward", "final"}'}
    reward, final = result.get("reward"), result.get("final")
    if reward is not None and (not isinstance(reward, (bool, int, float)) or not math.isfinite(reward)):
        return {"error": f"invalid: the agent's reward is {str(reward)[:40]}, not a finite number"}
    if final is not None and not isinstance(final, str):
        return {"error": f"invalid: the agent's final answer is a {type(final).__name__}, not a string"}
    body = {} if reward is None else {"reward": float(reward)}
    return body if final is None else {**body, "final": final}


class AgentWorker:
    """`target`: `rollout.agent`; `url`: the endpoint; `api_key`: its token (or a placeholder)."""

    def __init__(self, target: str, url: str, api_key: str, concurrency: int, timeout_s: float):
        import inspect

        from rlvr.plugins import AGENTS, load

        self.fn = load(target, None, AGENTS, "agent")
        call = self.fn if inspect.isfunction(self.fn) else getattr(self.fn, "__call__", None)
        if not inspect.iscoroutinefunction(call):
            raise TypeError(f"rollout.agent {target!r} must be an async function `async def rollout(client, row)`")
        self.url, self.api_key, self.concurrency, self.timeout_s = url, api_key, concurrency, timeout_s

    def ping(self) -> bool:
        return True

    def shutdown(self) -> bool:
        return True

    async def run(self, episodes: list[tuple[str, dict]]) -> int:
        """Run `(episode id, row)` episodes, each result posted to the endpoint; returns how many.
        (An async method: the actor runs it in its event loop.)"""
        import asyncio

        import httpx

        import openai

        gate = asyncio.Semaphore(self.concurrency)
        headers = {"Authorization": f"Bearer {self.api_key}"}
        # one connection pool for every episode's client: a new httpx client costs ~30 ms of CPU
        # (it loads the CA certificates), more than a call to the tiny model
        size = min(self.concurrency, POOL_CONNECTIONS)
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30.0) as http, \
                openai.DefaultAsyncHttpxClient(limits=limits, timeout=self.timeout_s) as pool:
            await asyncio.gather(*(self._one(gate, http, pool, episode_id, row) for episode_id, row in episodes))
        return len(episodes)

    async def _one(self, gate, http, pool, episode_id: str, row: dict) -> None:
        import asyncio

        import openai

        async with gate:
            client = openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=self.api_key, max_retries=0,
                                        timeout=self.timeout_s, default_headers={"X-Rlvr-Episode": episode_id},
                                        http_client=pool)
            try:
                body = result_body(await asyncio.wait_for(self.fn(client, row), self.timeout_s))
            except asyncio.TimeoutError:
                body = {"error": f"timeout: the agent ran over rollout.agent_timeout_s ({self.timeout_s:g} s)"}
            except Exception as e:  # noqa: BLE001 - the agent's bug fails its episode only
                body = {"error": f"exception: {type(e).__name__}: {one_line(e)}"[:500]}
            try:
                await http.post(f"/v1/episodes/{episode_id}/reward", json=body)
            except Exception:  # noqa: BLE001 - the episode then passes its deadline and is dropped
                pass


class AgentGroup:
    """`cfg`: the `rollout` section; the workers run on this node (the endpoint is on loopback)."""

    def __init__(self, cfg, url: str, api_key: str, timeout_s: float = 1800.0):
        self.args = (cfg.agent, url, api_key, cfg.agent_concurrency, cfg.agent_timeout_s)
        self.restarts, self.timeout_s = 0, timeout_s
        self._workers = [self._start() for _ in range(cfg.agent_workers)]
        wait_all([w.ping.remote() for w in self._workers], "starting the agent workers", timeout_s)

    def _start(self):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        return ray.remote(num_cpus=0)(actor_class(AgentWorker, "agent worker")).options(scheduling_strategy=here).remote(*self.args)

    def start(self, episodes) -> list:
        """Hand `episodes` (`rlvr.agent.board.AgentEpisode`) to the workers; what `settle` takes."""
        shares = split_evenly([(e.id, e.row()) for e in episodes], len(self._workers))
        return [(i, self._workers[i].run.remote(share)) for i, share in enumerate(shares) if share]

    def settle(self, pending: list, grace_s: float = 5.0) -> None:
        """After the episodes' deadlines: a worker still running them is stuck in agent code that
        blocks its event loop; it is killed and replaced."""
        import ray

        refs = [ref for _, ref in pending]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=grace_s)
        for i, ref in pending:
            if ref in ready:
                try:
                    ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the worker died: its episodes were dropped
                    self._replace(i, f"{type(e).__name__}: {one_line(e)}")
            else:
                self._replace(i, "its agent code did not return after the deadline")

    def _replace(self, i: int, why: str) -> None:
        import ray

        print(f"[rlvr] fault: agent worker {i} replaced ({why[:200]})", flush=True)
        self.restarts += 1
        ray.kill(self._workers[i])
        self._workers[i] = self._start()
        wait_all([self._workers[i].ping.remote()], "starting an agent worker", self.timeout_s)

    def places(self) -> list[dict]:
        return places(self._workers)

    def stop(self) -> None:
        import ray

        for w in self._workers:
            ray.kill(w)
