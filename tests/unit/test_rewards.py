"""Built-in verifiers called directly (no pool, no Ray), the registry, and the doctests."""

from __future__ import annotations

import doctest
import importlib
import random
import subprocess
import sys
import threading

import pytest

from rlvr.reward.builtin.format import FormatVerifier, split_think
from rlvr.reward.builtin.math import MathVerifier
from rlvr.plugins import known_verifiers, load_verifier, resolve_verifier_name
from rlvr.types import RewardInput, Score


def run(verifier, completion: str, answer: str = "85", prompt: str = "Q: 37+48=? A:") -> Score:
    return Score.coerce(verifier(RewardInput(prompt=prompt, completion=completion, answer=answer)))


# ---- math ----

@pytest.mark.parametrize("completion,answer,value", [
    ("85", "85", 1.0),  # plain integer (fast path)
    ("84", "85", 0.0),
    ("085", "85", 1.0),  # leading zeros are the same number
    ("The answer is 85.", "85", 1.0),  # plain final answer in a sentence
    ("I got 84 first, but the answer is 85", "85", 1.0),  # the last number counts
    ("\\boxed{85}", "85", 1.0),
    ("$\\boxed{84}$", "85", 0.0),
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),  # symbolic equality
    ("so $x = \\frac{2}{4}$", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\sqrt{2}}", "\\sqrt{2}", 1.0),  # a bare LaTeX reference is parsed whole (wrapped in \boxed)
    ("\\boxed{1+x^2}", "x^2+1", 1.0),
    ("<think>maybe 84</think> \\boxed{85}", "85", 1.0),  # only the text after </think> is scored
    ("<think>it is 85</think> 84", "85", 0.0),
    ("<think>a</think>84<think>b</think> 85", "85", 1.0),  # after the LAST </think>
])
def test_math_hand_checked(completion, answer, value):
    score = run(MathVerifier(), completion, answer)
    assert score.failure is None
    assert score.value == value
    assert score.parts["correct"] == value


def test_math_unclosed_think_is_zero_not_failure():
    score = run(MathVerifier(), "<think>37+48 = 85, so \\boxed{85}")
    assert score == Score(0.0, {"unclosed_think": 1.0}, None)


def test_math_no_answer_found():
    score = run(MathVerifier(), "I do not know")
    assert (score.value, score.failure) == (0.0, None)
    assert score.parts == {"answer_found": 0.0, "correct": 0.0}


def test_math_scores_are_options():
    check = MathVerifier(correct_score=2.0, wrong_score=-1.0)
    assert run(check, "85").value == 2.0
    assert run(check, "84").value == -1.0
    assert run(check, "<think>").value == -1.0


@pytest.mark.parametrize("options,match", [
    ({"correct_scor": 1.0}, "correct_scor"),  # a typo names itself
    ({"correct_score": "1"}, "correct_score"),
    ({"parsing_timeout": 0.5}, "parsing_timeout"),  # signal.alarm takes whole seconds
    ({"verify_timeout": 0}, "verify_timeout"),
    ({"fast_path": "yes"}, "fast_path"),
])
def test_math_bad_options(options, match):
    with pytest.raises(TypeError, match=match):
        MathVerifier(**options)


def test_math_fast_path_equals_math_verify():
    """The integer fast path (slow reference: math-verify itself) gives the same verdicts."""
    rng = random.Random(0)
    cases = [("85", "85"), ("-0", "0"), ("007", "7"), ("\\boxed{ 12 }", "12"), ("$\\boxed{12}$", "12"),
             ("$-3$", "-3"), ("3", "-3"), ("999999999999999", "999999999999999"),
             ("999999999999999", "999999999999998"), ("12", "\\boxed{12}")]
    for _ in range(200):
        a, b = rng.randint(-1000, 1000), rng.randint(-1000, 1000)
        cases.append((str(a), str(rng.choice([a, b]))))
    fast, slow = MathVerifier(fast_path=True), MathVerifier(fast_path=False)
    for completion, answer in cases:
        assert run(fast, completion, answer) == run(slow, completion, answer), (completion, answer)


def test_math_off_main_thread_needs_timeouts_off():
    """math-verify's alarms only work in the main thread: say so instead of scoring 0."""
    out = {}

    def body():
        out["fast"] = run(MathVerifier(), "85")  # the integer fast path needs no alarm
        out["unguarded"] = run(MathVerifier(parsing_timeout=None, verify_timeout=None), "\\boxed{\\frac{1}{2}}", "0.5")
        try:
            MathVerifier()(RewardInput("p", "\\boxed{\\frac{1}{2}}", "0.5"))
        except RuntimeError as e:
            out["error"] = str(e)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert "main thread" in out["error"]
    assert out["unguarded"].value == 1.0 and out["fast"].value == 1.0


# ---- format ----

def test_split_think():
    assert split_think("<think>x</think>y</think>z") == ("z", "closed")
    assert split_think("plain") == ("plain", "none")
    assert split_think("<think>open") == (None, "unclosed")


@pytest.mark.parametrize("completion,prompt,think", [
    ("<think>2+2</think> 4", "2+2=?", 1.0),
    ("\n<think>2+2</think>4", "2+2=?", 1.0),
    ("4", "2+2=?", 0.0),  # no block
    ("<think>2+2 is 4", "2+2=?", 0.0),  # never closed
    ("<think>a</think> 4 <think>b</think> 4", "2+2=?", 0.0),  # two blocks
    ("<think><think>a</think></think> 4", "2+2=?", 0.0),  # nested
    ("<think>2+2</think>   ", "2+2=?", 0.0),  # no answer after the block
    ("answer 4 <think>x</think> 4", "2+2=?", 0.0),  # block not first
    ("2+2 is 4</think> 4", "<|im_start|>assistant\n<think>\n", 1.0),  # block opened by the prompt
    ("2+2 is 4</think> 4", "2+2=?", 0.0),  # ... but not when the prompt did not open it
])
def test_format_think(completion, prompt, think):
    score = run(FormatVerifier(require_think=True), completion, "4", prompt)
    assert score == Score(think, {"think": think}, None)


def test_format_pattern():
    check = FormatVerifier(require_think=False, pattern=r"-?\d+")
    assert run(check, " 42 ").value == 1.0  # surrounding whitespace is stripped
    assert run(check, "<think>hmm</think>42").value == 1.0
    assert run(check, "42 apples").parts == {"pattern": 0.0}
    assert run(check, "<think>42").value == 0.0  # unclosed: no answer
    both = FormatVerifier(pattern=r"-?\d+")
    assert run(both, "<think>x</think> 7").parts == {"think": 1.0, "pattern": 1.0}
    assert run(both, "7").parts == {"think": 0.0, "pattern": 1.0}  # each part says which check failed
    assert run(both, "7").value == 0.0


def test_format_bad_options():
    with pytest.raises(ValueError, match="pattern"):
        FormatVerifier(pattern="(unclosed")
    with pytest.raises(ValueError, match="nothing to check"):
        FormatVerifier(require_think=False)
    with pytest.raises(TypeError, match="require_think"):
        FormatVerifier(require_think="yes")
    with pytest.raises(TypeError, match="patern"):
        FormatVerifier(patern="x")


# ---- registry ----

def test_resolve_builtins_and_paths():
    assert resolve_verifier_name("math") == "rlvr.reward.builtin.math:MathVerifier"
    assert resolve_verifier_name("format") == "rlvr.reward.builtin.format:FormatVerifier"
    assert {"math", "format"} <= set(known_verifiers())
    assert resolve_verifier_name("tests.helpers.bad_verifiers:exact") == "tests.helpers.bad_verifiers:exact"
    with pytest.raises(LookupError, match="not a valid"):
        resolve_verifier_name("tests.helpers:bad verifiers")


def test_resolve_unknown_name_lists_known_ones():
    with pytest.raises(LookupError) as e:
        resolve_verifier_name("mathh")
    message = str(e.value)
    assert "\n" not in message and "'mathh'" in message and "format" in message and "math" in message


def test_resolve_does_not_import_the_verifier():
    """Recipe validation must stay cheap: resolving reads metadata only."""
    code = ("import sys; from rlvr.plugins import resolve_verifier_name as r; r('math'); r('format'); "
            "assert not {'rlvr.reward.builtin.math', 'rlvr.reward.builtin.format', 'math_verify', 'sympy'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def _fake_distribution(root, dist: str, entry_points: str) -> None:
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_resolve_name_registered_twice(tmp_path, monkeypatch):
    """Two installed packages claiming one name: refuse, naming both (real metadata, no mocks)."""
    _fake_distribution(tmp_path / "a", "rlvr-plugin-one", "[rlvr.rewards]\nmath = plugin_one:check\nsolo = p:q\n")
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    with pytest.raises(LookupError) as e:
        resolve_verifier_name("math")
    assert "'rlvr'" in str(e.value) and "'rlvr-plugin-one'" in str(e.value)
    assert resolve_verifier_name("solo") == "p:q"
    assert resolve_verifier_name("format") == "rlvr.reward.builtin.format:FormatVerifier"


def test_load_verifier():
    assert isinstance(load_verifier("math", {"correct_score": 2.0}), MathVerifier)
    const = load_verifier("tests.helpers.bad_verifiers:Constant", {"value": 0.25})
    assert run(const, "x").value == 0.25
    exact = load_verifier("tests.helpers.bad_verifiers:exact", {})
    assert run(exact, "85").value == 1.0
    with pytest.raises(TypeError, match="takes no options"):
        load_verifier("tests.helpers.bad_verifiers:exact", {"value": 1})
    with pytest.raises(TypeError, match="wrong_scor"):
        load_verifier("math", {"wrong_scor": 1})
    with pytest.raises(ModuleNotFoundError):
        load_verifier("tests.helpers.no_such_module:f", {})


# ---- doctests ----

@pytest.mark.parametrize("module", ["rlvr.reward.builtin.math", "rlvr.reward.builtin.format", "rlvr.plugins", "rlvr.reward.worker"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
