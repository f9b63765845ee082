"""A built-in agent (`rollout.agent: calc`, `recipes/tiny-agent-cpu.yaml`): plain `openai` client
code, the kind a user already has, trained through the endpoint as it is.

It asks the model the row's question with a `calc` tool. When the model calls the tool, the
agent runs it and asks again for the answer, with a compacted history: the tool schemas are
dropped from the context (no more tools are needed), so the second call's prompt is not
the first call's prompt plus its tokens. Both calls are captured exactly as the engine
served them and trained as two sequences with the episode's advantage. The verifiers
score the episode's last assistant message; the agent returns no reward of its own.
"""

from __future__ import annotations

import json

CALC = {"type": "function", "function": {
    "name": "calc", "description": "Evaluate an arithmetic expression and return its value.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string", "description": "e.g. 4821*37"}},
                   "required": ["expression"]}}}


async def calc_agent(client, row):
    from rlvr.tools.builtin import Calc

    question = row["messages"]
    first = await client.chat.completions.create(model="policy", messages=question, tools=[CALC])
    reply = first.choices[0].message
    if not reply.tool_calls:
        return None  # it answered at once: that answer is scored
    call = reply.tool_calls[0]
    try:
        result = Calc()(**json.loads(call.function.arguments))
    except Exception as e:  # noqa: BLE001 - the model's bad call: its error is what it sees
        result = f"error: {e}"
    history = [*question, {"role": "assistant", "content": reply.content or "", "tool_calls": [call.model_dump()]},
               {"role": "tool", "tool_call_id": call.id, "content": result}]
    await client.chat.completions.create(model="policy", messages=history)  # compacted: no tools
    return None
