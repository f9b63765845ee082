"""`rlvr eval` / `rlvr sample` metrics: pass@k against brute-force enumeration, maj@k, answers, keep modes."""

from __future__ import annotations

import itertools

import pytest

from rlvr.eval.metrics import final_answer, k_values, keep_samples, majority_correct, pass_at_k, summarize


@pytest.mark.parametrize("n, c", [(1, 0), (1, 1), (4, 0), (4, 1), (5, 2), (6, 6), (8, 3)])
def test_pass_at_k_equals_the_fraction_of_k_subsets_with_a_correct_sample(n, c):
    samples = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(samples, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    with pytest.raises(ValueError):
        pass_at_k(n, c, n + 1)


@pytest.mark.parametrize("text, answer", [
    ("<think>maybe 3</think> The answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("55<|im_end|>", "55"),
    ("first 12 then -7.5", "-7.5"),
    ("<think>never closed 9", ""),
    ("  yes ", "yes"),
])
def test_final_answer(text, answer):
    assert final_answer(text) == answer


def test_majority_vote_and_ties():
    assert majority_correct(["4", "5", "4"], [True, False, True])
    assert not majority_correct(["4", "5", "5"], [True, False, False])
    assert majority_correct(["4", "5"], [True, False])  # a tie goes to the answer seen first
    assert not majority_correct(["5", "4"], [False, True])


def test_k_values():
    assert k_values(1) == [1] and k_values(8) == [1, 2, 4, 8] and k_values(6) == [1, 2, 4, 6]


def _s(completion, correct, reward=None, answer=None):
    return {"completion": completion, "correct": correct, "reward": float(correct) if reward is None else reward,
            "answer": answer or completion, "length": len(completion), "scores": {"math": float(correct)},
            "failures": {}}


def test_summarize():
    groups = [[_s("4", True), _s("5", False), _s("4", True), _s("6", False)],
              [_s("1", False), _s("2", False), _s("2", False), _s("3", True)]]
    out = summarize(groups, ["math"])
    assert out["prompts"] == 2 and out["n"] == 4
    assert out["accuracy"] == pytest.approx(3 / 8)
    assert out["pass@1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert out["pass@4"] == 1.0
    assert out["maj@4"] == 0.5  # "4" wins the first prompt, "2" (wrong) the second
    assert out["maj@1"] == 0.5
    assert out["reward/math/mean"] == pytest.approx(3 / 8) and out["reward/math/failures"] == 0


def test_keep_modes():
    group = [_s("a", False, 0.2), _s("b", True, 1.0), _s("b", True, 1.0), _s("c", True, 1.1)]
    assert [s["completion"] for s in keep_samples(group, "best", 0)] == ["c"]
    assert [s["completion"] for s in keep_samples(group, "all-correct", 0)] == ["b", "c"]  # equal texts once
    assert [s["completion"] for s in keep_samples(group, "threshold", 0.1)] == ["a", "b", "c"]
    assert keep_samples([_s("a", False, 0.9)], "best", 0) == []  # the best must also be correct
    with pytest.raises(ValueError, match="--keep"):
        keep_samples(group, "most", 0)
