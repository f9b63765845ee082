"""Sample files for `rlvr rewards check --samples` and `rlvr rewards score --samples`.

A samples file is JSONL, one sample per line (blank lines skipped):

    {"completion": "<think>...</think> 3 km", "answer": "3000 m", "prompt": "How far ...?",
     "metadata": {"unit_system": "SI"}, "expect": 1.0}

  completion   str, required: what the model wrote
  answer       str or number (made a string), default "": the reference answer
  prompt       str, default "": the prompt as the verifier sees it in training, i.e. the
               chat-templated text (`<|im_start|>user ...`) unless `data.apply_chat_template`
               is false
  metadata     object, default {}: in training, the dataset row's other fields plus `source`
               (the file and row it came from); multi-turn episodes add `messages`
  expect       number: the score the verifier must give this row (within 1e-6)
  expect_min   number: the score must be at least this (a correct answer: `expect_min: 1`)
  expect_max   number: the score must be at most this (a wrong answer: `expect_max: 0`)

Any other field is an error (a typo such as `expected` must not silently test nothing).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from rlvr.types import RewardInput

FIELDS = ("completion", "answer", "prompt", "metadata", "expect", "expect_min", "expect_max")
TOLERANCE = 1e-6


class SamplesError(ValueError):
    """A samples file that cannot be used; the message names the file and line."""


@dataclass
class SampleRow:
    """One sample of a samples file: the verifier's input, what it must score, its line (1-based)."""

    sample: RewardInput
    line: int = 0
    expect: float | None = None
    expect_min: float | None = None
    expect_max: float | None = None

    @property
    def has_expectation(self) -> bool:
        return not (self.expect is None and self.expect_min is None and self.expect_max is None)

    def mismatch(self, value: float) -> str | None:
        """Why `value` is not what this row expects, or None.

        >>> row = SampleRow(RewardInput("", "3 km", "3000 m"), 4, expect_min=1.0)
        >>> row.mismatch(1.0), row.mismatch(0.0)
        (None, 'line 4: got 0, expected >= 1')
        """
        if self.expect is not None and abs(value - self.expect) > TOLERANCE:
            return f"line {self.line}: got {value:g}, expected {self.expect:g}"
        if self.expect_min is not None and value < self.expect_min - TOLERANCE:
            return f"line {self.line}: got {value:g}, expected >= {self.expect_min:g}"
        if self.expect_max is not None and value > self.expect_max + TOLERANCE:
            return f"line {self.line}: got {value:g}, expected <= {self.expect_max:g}"
        return None


def parse_row(raw, where: str = "row") -> SampleRow:
    """One parsed JSON object as a `SampleRow` (raises SamplesError naming `where`).

    >>> parse_row({"completion": "3 km", "answer": 3000, "expect": 1}).sample.answer
    '3000'
    >>> try:
    ...     parse_row({"completion": "x", "expected": 1})
    ... except SamplesError as e:
    ...     print(e)
    row: unknown field 'expected' (fields: completion, answer, prompt, metadata, expect, expect_min, expect_max)
    """
    if not isinstance(raw, dict):
        raise SamplesError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise SamplesError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
    if not isinstance(raw.get("completion"), str):
        raise SamplesError(f"{where}: needs a 'completion' string")
    answer = raw.get("answer", "")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise SamplesError(f"{where}: 'answer' must be a string or a number")
    prompt = raw.get("prompt", "")
    if not isinstance(prompt, str):
        raise SamplesError(f"{where}: 'prompt' must be a string")
    metadata = raw.get("metadata", {})
    if not isinstance(metadata, dict):
        raise SamplesError(f"{where}: 'metadata' must be an object")
    bounds = {}
    for key in ("expect", "expect_min", "expect_max"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise SamplesError(f"{where}: {key!r} must be a finite number")
        bounds[key] = None if value is None else float(value)
    return SampleRow(RewardInput(prompt, raw["completion"], str(answer), dict(metadata)), **bounds)


def read_samples(path: str, text: str | None = None) -> list[SampleRow]:
    """Every sample of a JSONL file (`text`: its content, when already read). Raises
    SamplesError naming the file and line; a file with no samples is an error."""
    if text is None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise SamplesError(f"{path}: cannot read: {e}") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise SamplesError(f"{path} line {n}: not JSON: {e}") from None
        row = parse_row(raw, f"{path} line {n}")
        row.line = n
        rows.append(row)
    if not rows:
        raise SamplesError(f"{path}: no samples")
    return rows
