r"""Built-in `code` verifier: run the completion's Python against test cases.

What is run: the last fenced ```python block of the answer (else the last ``` block),
else the whole answer, where the answer is the text after the last `</think>` (the
whole completion without one). A `<think>` that is never closed means no answer:
score 0, part `unclosed_think`.

Modes (the reference `answer` holds the tests):
  * "stdio": a JSON list of {"input": str, "output": str}; each case runs the
    program once with `input` on stdin and passes when its stdout equals `output`
    (trailing whitespace of each line and trailing blank lines ignored).
  * "assert": Python test code, appended after the solution and run once; it
    passes when the script exits with status 0.

Score = passed / total. A run that times out, runs out of memory or crashes just
fails its test (a 0 for that case, never a verifier failure); a malformed test
spec is a failure (value 0, `failure` says why).

Each run goes through `rlvr.reward.sandbox.run_python` (bubblewrap when installed, else a
weaker fallback with a warning; limits; see its docstring for what is and is not isolated). Runs are sequential,
so a sample can take up to tests * timeout_s: `total_timeout_s` caps the whole
sample (cases not started by then fail, part `skipped`), and the reward pool's
`timeout_s` for this verifier must be larger than it, or the pool kills the
verifier first and records a failure instead of a score.
"""

from __future__ import annotations

import json
import re
import time

from rlvr.reward.builtin.format import split_think
from rlvr.reward.sandbox import run_python
from rlvr.types import RewardInput, Score

_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_MODES = ("stdio", "assert")


def extract_code(completion: str) -> str | None:
    """The code to run: last ```python block, else last ``` block, else the answer
    text itself; None when a `<think>` is never closed.

    >>> extract_code("<think>hm</think>Here:\\n```python\\nprint(1)\\n```\\n")
    'print(1)\\n'
    >>> extract_code("print(2)")
    'print(2)'
    """
    answer, status = split_think(completion)
    if answer is None:
        return None
    blocks = _FENCE.findall(answer)
    python_blocks = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3")]
    if python_blocks:
        return python_blocks[-1]
    if blocks:
        return blocks[-1][1]
    return answer


def _normalize(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()).rstrip()


def _parse_stdio_tests(answer: str) -> list[tuple[str, str]] | str:
    """[(input, output), ...] from the JSON spec, or the reason it is malformed."""
    try:
        cases = json.loads(answer)
    except json.JSONDecodeError as e:
        return f"stdio test spec is not valid JSON: {e}"
    if not isinstance(cases, list) or not cases:
        return "stdio test spec must be a non-empty JSON list of {\"input\": str, \"output\": str}"
    parsed = []
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or not isinstance(case.get("input"), str) or not isinstance(case.get("output"), str):
            return f"stdio test case {i} must be {{\"input\": str, \"output\": str}}, got {str(case)[:80]}"
        parsed.append((case["input"], case["output"]))
    return parsed


def _positive(name: str, value: object, kind: type) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
        raise TypeError(f"code verifier: option {name} must be a positive {'number' if kind is float else 'integer'}, "
                        f"got {value!r}")


class CodeVerifier:
    r"""Score the fraction of test cases the completion's Python program passes.

    Options: mode ("stdio" | "assert"), timeout_s (5, wall clock per run),
    cpu_s (timeout_s), memory_mb (256, address space per process), max_file_mb (16),
    max_procs (32), total_timeout_s (20, whole sample). Parts: `passed`, `total`,
    `timed_out` (runs), `skipped` (cases not run for lack of time), `net_isolated`
    (1 when runs had no network), or `unclosed_think`.

    >>> from rlvr.types import RewardInput
    >>> check = CodeVerifier(mode="stdio", timeout_s=5)
    >>> tests = '[{"input": "2 3\\n", "output": "5"}, {"input": "10 -4\\n", "output": "6"}]'
    >>> good = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    >>> score = check(RewardInput(prompt="add", completion=good, answer=tests))
    >>> score.value, score.parts["passed"], score.parts["total"], score.failure
    (1.0, 2.0, 2.0, None)
    >>> check(RewardInput(prompt="add", completion="print(5)", answer=tests)).value
    0.5
    >>> check(RewardInput(prompt="add", completion="print(5)", answer="not json")).failure[:34]
    'stdio test spec is not valid JSON:'
    """

    def __init__(self, *, mode: str = "stdio", timeout_s: float = 5.0, cpu_s: float | None = None,
                 memory_mb: int = 256, max_file_mb: int = 16, max_procs: int = 32, total_timeout_s: float = 20.0):
        if mode not in _MODES:
            raise ValueError(f"code verifier: option mode must be one of {_MODES}, got {mode!r}")
        cpu_s = timeout_s if cpu_s is None else cpu_s
        for name, value, kind in (("timeout_s", timeout_s, float), ("cpu_s", cpu_s, float),
                                  ("total_timeout_s", total_timeout_s, float), ("memory_mb", memory_mb, int),
                                  ("max_file_mb", max_file_mb, int), ("max_procs", max_procs, int)):
            _positive(name, value, kind)
        if memory_mb < 32:
            raise ValueError(f"code verifier: option memory_mb must be >= 32 (the interpreter needs it), got {memory_mb}")
        self.mode, self.total_timeout_s = mode, float(total_timeout_s)
        self.limits = dict(timeout_s=float(timeout_s), cpu_s=float(cpu_s), memory_mb=memory_mb,
                           max_file_mb=max_file_mb, max_procs=max_procs)

    def __call__(self, sample: RewardInput) -> Score:
        code = extract_code(sample.completion)
        if code is None:
            return Score(0.0, {"unclosed_think": 1.0})
        if self.mode == "assert":
            if not sample.answer.strip():
                return Score(0.0, failure="assert test spec is empty")
            runs = [(code + "\n\n" + sample.answer + "\n", "", None)]
        else:
            cases = _parse_stdio_tests(sample.answer)
            if isinstance(cases, str):
                return Score(0.0, failure=cases)
            runs = [(code, stdin, expected) for stdin, expected in cases]
        return self._run_all(runs)

    def _run_all(self, runs: list[tuple[str, str, str | None]]) -> Score:
        passed = timed_out = skipped = 0
        isolated = True
        end = time.monotonic() + self.total_timeout_s
        for source, stdin, expected in runs:
            left = end - time.monotonic()
            if left <= 0.05:
                skipped += 1
                continue
            limits = dict(self.limits, timeout_s=min(self.limits["timeout_s"], left))
            result = run_python(source, stdin, **limits)
            isolated = isolated and result.net_isolated
            timed_out += result.timed_out
            if result.returncode == 0 and result.killed_reason is None:
                passed += expected is None or _normalize(result.stdout) == _normalize(expected)
        total = len(runs)
        parts = {"passed": float(passed), "total": float(total), "timed_out": float(timed_out),
                 "skipped": float(skipped), "net_isolated": float(isolated)}
        return Score(passed / total, parts)
