"""An example tool (`convert`: units of length) and environment (`budget`: a cap on tool calls
per episode, and a small reward for staying under it) for rlvr's multi-turn rollouts."""

from __future__ import annotations

from rlvr.tools.calls import ToolCall
from rlvr.tools.env import ToolEnv

METRES = {"mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0, "in": 0.0254, "ft": 0.3048, "mi": 1609.344}


class Convert:
    """Convert a length between units. Options (from the recipe's tool item): `digits`."""

    schema = {
        "name": "convert",
        "description": "Convert a length from one unit to another.",
        "parameters": {
            "type": "object",
            "properties": {
                "value": {"type": "number", "description": "the length"},
                "unit": {"type": "string", "enum": sorted(METRES), "description": "its unit"},
                "to": {"type": "string", "enum": sorted(METRES), "description": "the unit wanted"},
            },
            "required": ["value", "unit", "to"],
        },
    }

    def __init__(self, *, digits: int = 4):
        if not isinstance(digits, int) or not 0 <= digits <= 12:
            raise ValueError(f"digits must be an integer in [0, 12], got {digits!r}")
        self.digits = digits

    def __call__(self, value: float, unit: str, to: str) -> str:
        if unit not in METRES or to not in METRES:
            raise ValueError(f"units must be among {', '.join(sorted(METRES))}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("value must be a number")
        return f"{round(value * METRES[unit] / METRES[to], self.digits):g} {to}"


class BudgetEnv(ToolEnv):
    """The default environment with a budget: at most `max_calls` tool calls per episode (the
    ones past it are refused: the model sees an error and they are not run); `bonus` is added
    to the verifiers' reward of an episode that stayed within it (scaled by the recipe's
    `rollout.multi_turn.env_reward_weight`). Each episode has its own object: `self.used`
    counts that episode's calls."""

    def __init__(self, *, max_calls: int = 2, bonus: float = 0.1):
        if not isinstance(max_calls, int) or max_calls < 0:
            raise ValueError(f"max_calls must be an integer >= 0, got {max_calls!r}")
        self.max_calls, self.bonus, self.used = max_calls, float(bonus), 0

    def step(self, turn) -> list:
        calls = []
        for call in turn.calls:
            self.used += 1
            if self.used > self.max_calls and call.error is None:
                call = ToolCall(call.name, call.arguments, f"invalid: over the budget of {self.max_calls} tool calls")
            calls.append(call)
        return calls

    def reward(self, episode) -> float | None:
        return self.bonus if self.used <= self.max_calls else 0.0
