"""Agents for the tests (`rollout.agent: tests.helpers.agents:<name>`): a broken one, and a chaotic
one that mixes working episodes with every way an agent can fail."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

from rlvr.agent.examples import CALC


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
    """By the row's operand: most episodes ask once with the calc tool and reward a tool call;
    the rest raise, hang past the deadline, block the event loop (once), return garbage, or
    never call the endpoint."""
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
    reply = await client.chat.completions.create(model="policy", messages=row["messages"], tools=[CALC])
    return 1.0 if reply.choices[0].message.tool_calls else 0.0  # its own reward: it wants the tool called
