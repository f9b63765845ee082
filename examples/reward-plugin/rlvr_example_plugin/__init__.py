"""An example rlvr reward plugin: `exact_match`, registered in pyproject.toml."""

from __future__ import annotations

from rlvr.types import RewardInput, Score


class ExactMatch:
    """1.0 when the final answer (text after the last `</think>`) equals the reference.

    Options: strip (default true: ignore surrounding whitespace), case_sensitive
    (default true). Part `has_answer`: 0.0 when a `<think>` block was never closed.

    >>> check = ExactMatch(case_sensitive=False)
    >>> check(RewardInput(prompt="Capital of France?", completion="<think>easy</think> Paris", answer="paris"))
    Score(value=1.0, parts={'has_answer': 1.0}, failure=None)
    >>> check(RewardInput(prompt="Capital of France?", completion="<think>hmm", answer="paris")).value
    0.0
    """

    def __init__(self, *, strip: bool = True, case_sensitive: bool = True):
        for name, value in (("strip", strip), ("case_sensitive", case_sensitive)):
            if not isinstance(value, bool):
                raise TypeError(f"exact_match verifier: option {name} must be true/false, got {value!r}")
        self.strip, self.case_sensitive = strip, case_sensitive

    def __call__(self, sample: RewardInput) -> Score:
        text = sample.completion
        if "</think>" in text:
            text = text.rsplit("</think>", 1)[1]
        elif "<think>" in text:
            return Score(0.0, {"has_answer": 0.0})
        got, want = self._norm(text), self._norm(sample.answer)
        return Score(float(got == want), {"has_answer": 1.0})

    def _norm(self, text: str) -> str:
        text = text.strip() if self.strip else text
        return text if self.case_sensitive else text.casefold()
