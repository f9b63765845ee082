"""Built-in `length` verifier: DAPO's soft overlong penalty.

DAPO (Yu et al. 2025, "Overlong Reward Shaping") penalises a response of length
L against a maximum `max_length` and a soft interval `cache_length`:

    0                                   if L <= max_length - cache_length
    (max_length - cache_length - L) / cache_length   inside the interval
    -1                                  if L > max_length

Departure from the paper: DAPO counts generated *tokens*; a verifier only sees
text, so L is counted in characters (`unit: chars`) or whitespace-separated words
(`unit: words`). Pick `max_length` in that unit (roughly 4 chars or 0.75 words per
token for English BPE). Add it beside a correctness verifier; it is a penalty
only (0 down to -1), never a reward.
"""

from __future__ import annotations

from rlvr.types import RewardInput, Score

UNITS = ("chars", "words")


class LengthVerifier:
    """Overlong penalty on the completion: 0 when short enough, down to -1.

    Options: max_length (required, > 0), cache_length (the soft interval, default
    max_length // 4, 0 <= cache_length < max_length; 0 gives a hard -1 above
    max_length), unit ("chars" or "words", default "chars").
    Parts: `length` (in `unit`), `overlong` (1.0 when past max_length).

    >>> from rlvr.types import RewardInput
    >>> check = LengthVerifier(max_length=10, cache_length=4)
    >>> check(RewardInput(prompt="", completion="abcdef", answer="")).value
    0.0
    >>> check(RewardInput(prompt="", completion="abcdefgh", answer="")).value  # (6 - 8) / 4
    -0.5
    >>> check(RewardInput(prompt="", completion="x" * 11, answer=""))
    Score(value=-1.0, parts={'length': 11.0, 'overlong': 1.0}, failure=None)
    >>> LengthVerifier(max_length=4, cache_length=2, unit="words")(RewardInput("", "one two three", "")).value
    -0.5
    """

    def __init__(self, *, max_length: int, cache_length: int | None = None, unit: str = "chars"):
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise TypeError(f"length verifier: option max_length must be a whole number >= 1, got {max_length!r}")
        if cache_length is None:
            cache_length = max_length // 4
        if isinstance(cache_length, bool) or not isinstance(cache_length, int) or not 0 <= cache_length < max_length:
            raise ValueError(f"length verifier: option cache_length must be a whole number in [0, max_length), "
                             f"got {cache_length!r}")
        if unit not in UNITS:
            raise ValueError(f"length verifier: option unit must be one of {', '.join(UNITS)}, got {unit!r}")
        self.max_length, self.cache_length, self.unit = max_length, cache_length, unit

    def __call__(self, sample: RewardInput) -> Score:
        text = sample.completion
        length = len(text) if self.unit == "chars" else len(text.split())
        if length > self.max_length:
            value = -1.0
        elif length <= self.max_length - self.cache_length:
            value = 0.0
        else:  # inside the soft interval (cache_length > 0 here)
            value = (self.max_length - self.cache_length - length) / self.cache_length
        return Score(value, {"length": float(length), "overlong": float(length > self.max_length)})
