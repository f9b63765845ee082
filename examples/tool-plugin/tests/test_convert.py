import pytest

from rlvr_example_tools import BudgetEnv, Convert


def test_convert():
    assert Convert()(value=1, unit="km", to="m") == "1000 m"
    assert Convert(digits=2)(value=1, unit="in", to="cm") == "2.54 cm"
    with pytest.raises(ValueError):
        Convert()(value=1, unit="parsec", to="m")


def test_budget_refuses_calls_past_it():
    from rlvr.rollout.episodes import Turn
    from rlvr.tools.calls import ToolCall

    env = BudgetEnv(max_calls=1)
    calls = env.step(Turn(0, "", [ToolCall("convert", {}), ToolCall("convert", {})]))
    assert [c.error for c in calls] == [None, "invalid: over the budget of 1 tool calls"]
    assert env.reward(None) == 0.0
