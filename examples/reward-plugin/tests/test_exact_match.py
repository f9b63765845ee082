"""The plugin's own tests: run with `pytest examples/reward-plugin/tests`."""

import doctest

import pytest

import rlvr_example_plugin
from rlvr_example_plugin import ExactMatch
from rlvr.types import RewardInput


def test_doctests():
    assert doctest.testmod(rlvr_example_plugin).failed == 0


@pytest.mark.parametrize("completion, answer, options, value", [
    ("42", "42", {}, 1.0),
    ("  42\n", "42", {}, 1.0),
    ("  42\n", "42", {"strip": False}, 0.0),
    ("<think>6*7</think>42", "42", {}, 1.0),
    ("PARIS", "paris", {}, 0.0),
    ("PARIS", "paris", {"case_sensitive": False}, 1.0),
    ("", "42", {}, 0.0),
])
def test_exact_match(completion, answer, options, value):
    assert ExactMatch(**options)(RewardInput("q", completion, answer)).value == value


def test_bad_option_is_rejected():
    with pytest.raises(TypeError, match="strip"):
        ExactMatch(strip="yes")
