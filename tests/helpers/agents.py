"""Agents for the tests (`rollout.agent: tests.helpers.agents:<name>`): broken ones, and a chaotic
one that mixes the built-in `calc` agent's episodes with every way an agent can fail."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

from rlvr.agent.examples import calc_agent


async def raises(client, row):
    raise RuntimeError("the agent's own bug")


BLOCK_FLAG = os.path.join(tempfile.gettempdir(), "rlvr-test-chaos-agent-blocked")  # the test removes it first


def first_time() -> bool:
    try:
        os.close(os.open(BLOCK_FLAG, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


async def chaos(client, row):
    """By the row's operand: most episodes are the calc agent's; the rest raise, hang past the
    deadline, block the event loop, return garbage, or never call the endpoint."""
    kind = int(row["metadata"].get("b", 0)) % 10 if isinstance(row.get("metadata"), dict) else 0
    if kind == 1:
        raise ValueError("boom")
    if kind == 2:
        await asyncio.sleep(3600)  # cancelled at rollout.agent_timeout_s
    if kind == 3:
        return {"reward": "lots"}  # invalid
    if kind == 4:
        return 1.0  # a reward, but no call was made: dropped
    if kind == 5 and first_time():
        time.sleep(3600)  # blocks its worker's event loop (once in a run): the worker is replaced
    return await calc_agent(client, row)
