"""Concurrent endpoint requests, batched onto the rollout engines.

Every request goes to the engine with the least work queued or running. While an engine
runs one batch, the requests that arrive for it queue; when the batch returns, everything
queued goes to it in one `generate_requests` call (each request with its own sampling). So
64 agents calling at once make a few engine calls, not 64, and the engines stay busy.

Runs in the endpoint's event loop (Ray object refs are awaitable). An engine that dies is
replaced by its `RolloutGroup` (which brings the new one to the current weights) and the
batch is sent again; any other engine error sends the batch's requests again one by one, so
a request the engine refuses fails alone (a 503).
"""

from __future__ import annotations

import asyncio
from collections import deque

from rlvr.types import Completion, SamplingSpec

MAX_BATCH = 256  # requests per engine call


class EngineError(RuntimeError):
    """The engine could not serve a request (not the request's fault)."""


class EngineDispatcher:
    """`rollouts`: the `RolloutGroup` (its `handles` and `replace`)."""

    def __init__(self, rollouts):
        self.rollouts = rollouts
        n = len(rollouts.handles)
        self._queues: list[deque] = [deque() for _ in range(n)]
        self._running = [0] * n  # requests in the engine's current call
        self.calls = 0  # engine calls made (a bench reads calls per request)

    async def generate(self, prompt_ids: list[int], spec: SamplingSpec) -> list[Completion]:
        """`spec.n` completions of one prompt, from whichever engine is least busy."""
        i = min(range(len(self._queues)), key=lambda k: len(self._queues[k]) + self._running[k])
        future = asyncio.get_running_loop().create_future()
        self._queues[i].append((list(prompt_ids), spec, future))
        if not self._running[i]:
            asyncio.get_running_loop().create_task(self._drain(i))
        return await future

    async def _drain(self, i: int) -> None:
        queue = self._queues[i]
        while queue:
            batch = [queue.popleft() for _ in range(min(MAX_BATCH, len(queue)))]
            self._running[i] = len(batch)
            try:
                await self._serve(i, batch)
            finally:
                self._running[i] = 0

    async def _serve(self, i: int, batch: list) -> None:
        """One engine call for the batch; if it fails, each request alone, so one request the
        engine refuses fails only itself."""
        try:
            results = await self._call(i, [(p, s) for p, s, _ in batch])
        except Exception as e:  # noqa: BLE001 - each waiting request gets the error
            if len(batch) > 1:
                for one in batch:
                    await self._serve(i, [one])
                return
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(EngineError(f"{type(e).__name__}: {e}"))
            return
        for (_, _, future), completions in zip(batch, results):
            if not future.done():
                future.set_result(completions)

    async def _call(self, i: int, requests: list) -> list[list[Completion]]:
        import ray

        for attempt in range(2):
            engine = self.rollouts.handles[i]
            self.calls += 1
            try:
                return await engine.generate_requests.remote(requests)
            except ray.exceptions.RayActorError as e:
                if attempt:
                    raise
                await asyncio.to_thread(self.rollouts.replace, i, e, engine)
        raise AssertionError("unreachable")
