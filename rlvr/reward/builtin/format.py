r"""Built-in `format` verifier: does the completion have the asked-for shape?

Checks are structural only (no maths): a closed `<think>...</think>` block
before the answer (`require_think`) and/or an answer that fully matches a regex
(`pattern`). The score is 1.0 when every enabled check passes, else 0.0, with
one part per check so a run can see which check fails.

`split_think` is shared with the `math` verifier: both score the text after the
last `</think>`, and both treat a `<think>` that is never closed as "no answer".
"""

from __future__ import annotations

import re

from rlvr.types import RewardInput, Score

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# One block at the very start (after whitespace), then the answer. Nested or
# repeated tags are rejected by counting tags after the match.
_THINK_BLOCK = re.compile(r"\s*<think>(?P<thought>.*?)</think>(?P<answer>.*)", re.DOTALL)


def split_think(completion: str) -> tuple[str | None, str]:
    """Split off a reasoning block: return (answer text, think status).

    status is "closed" (answer = text after the last `</think>`), "none" (no tags:
    answer = the whole completion) or "unclosed" (`<think>` opened, never closed:
    answer None, the completion has no answer yet).

    >>> split_think("<think>2+2 is 4</think> 4")
    (' 4', 'closed')
    >>> split_think("4")
    ('4', 'none')
    >>> split_think("<think>still thinking")
    (None, 'unclosed')
    """
    if THINK_CLOSE in completion:
        return completion.rsplit(THINK_CLOSE, 1)[1], "closed"
    if THINK_OPEN in completion:
        return None, "unclosed"
    return completion, "none"


class FormatVerifier:
    r"""Score 1.0 when the completion has the required structure, else 0.0.

    Options:
      require_think (bool, default True): the completion must start with one
        closed `<think>...</think>` block followed by a non-empty answer. When the
        prompt ends with `<think>` (chat templates such as DeepSeek-R1's open the
        block in the prompt), the completion may start inside the block.
      pattern (str, optional): a regex the answer (stripped of surrounding
        whitespace) must match in full. The answer is the text after the last
        `</think>` (the whole completion without one; none if `<think>` is unclosed).

    Parts: `think` and/or `pattern` (1.0 pass, 0.0 fail), for the checks enabled.
    A completion with the wrong shape is a 0, never a failure.

    >>> from rlvr.types import RewardInput
    >>> check = FormatVerifier(require_think=True, pattern=r"-?\d+")
    >>> check(RewardInput(prompt="2+2=?", completion="<think>easy</think> 4", answer="4"))
    Score(value=1.0, parts={'think': 1.0, 'pattern': 1.0}, failure=None)
    >>> check(RewardInput(prompt="2+2=?", completion="4", answer="4")).parts
    {'think': 0.0, 'pattern': 1.0}
    """

    def __init__(self, *, require_think: bool = True, pattern: str | None = None):
        if not isinstance(require_think, bool):
            raise TypeError(f"format verifier: option require_think must be true/false, got {require_think!r}")
        if pattern is not None and not isinstance(pattern, str):
            raise TypeError(f"format verifier: option pattern must be a regex string, got {pattern!r}")
        if not require_think and pattern is None:
            raise ValueError("format verifier: nothing to check; set require_think: true or a pattern")
        try:
            self.pattern = re.compile(pattern, re.DOTALL) if pattern is not None else None
        except re.error as e:
            raise ValueError(f"format verifier: option pattern is not a valid regex ({e}): {pattern!r}") from None
        self.require_think = require_think

    def __call__(self, sample: RewardInput) -> Score:
        parts: dict[str, float] = {}
        if self.require_think:
            block_answer = _answer_after_think_block(sample.prompt, sample.completion)
            parts["think"] = float(block_answer is not None and block_answer.strip() != "")
        if self.pattern is not None:  # checked on its own, so the parts say which check failed
            answer = split_think(sample.completion)[0]
            parts["pattern"] = float(answer is not None and self.pattern.fullmatch(answer.strip()) is not None)
        return Score(float(all(v == 1.0 for v in parts.values())), parts)


def _answer_after_think_block(prompt: str, completion: str) -> str | None:
    """The answer after exactly one leading, closed think block; None if malformed."""
    text = completion
    if THINK_OPEN not in completion and prompt.rstrip().endswith(THINK_OPEN):
        text = THINK_OPEN + completion  # the block was opened by the prompt
    m = _THINK_BLOCK.fullmatch(text)
    if m is None or text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1:
        return None
    return m["answer"]
