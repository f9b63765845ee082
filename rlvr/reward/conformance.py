"""Conformance kit for verifier plugins: does a verifier keep the contract?

`check_verifier(name, options)` loads the verifier (a registered name or a
"package.module:attr" path) inside a `RewardWorker` child process, exactly as
training does, so a verifier that hangs or kills its process fails a check
instead of hanging the kit. It then scores a handful of ordinary and hostile
samples and returns one `CheckResult` per contract item:

  loads            the worker starts: the options are valid, the import works
  returns_score    a plain sample gives a Score or a number (no exception, no None)
  finite           no sample produced NaN or inf
  empty            an empty completion is scored, not failed
  huge             a 1 MB completion is scored within the timeout
  unicode          CJK, emoji, combining and right-to-left text is scored
  surrogates_nul   lone surrogates and NUL bytes are scored
  deterministic    the same sample twice gives the same value
  latency          median round-trip ms per sample (through the worker's pipe,
                   so ~0.1 ms of it is overhead) is at most `max_ms`
  no_crash_or_hang no sample hung past `timeout_s` or killed the process

A wrong answer is a score, not a failure: a verifier that returns
`Score(failure=...)` for an empty or odd completion fails that check, since in
training such samples would get the failure score and be counted as failures.
`format_table` prints the results. `rlvr rewards check NAME` is the command line.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

from rlvr.types import RewardInput, SampleReward

_HUGE_CHARS = 1 << 20


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str
    seconds: float


def default_sample() -> RewardInput:
    """An ordinary, correct sample (think block, then a bare integer answer)."""
    return RewardInput(prompt="What is 6 times 7?", completion="<think>6 * 7 = 42</think> 42", answer="42")


def check_verifier(name: str, options: dict | None = None, *, sample: RewardInput | None = None,
                   timeout_s: float = 5.0, n_timing: int = 20, max_ms: float = 100.0) -> list[CheckResult]:
    """Run the contract against verifier `name` built with `options`; see the module doc.

    `sample` replaces the ordinary sample (its prompt and answer are reused for the
    hostile ones); `timeout_s` is the worker's hard kill per sample.
    """
    from rlvr.reward.worker import RewardWorker

    base = sample or default_sample()
    results: list[CheckResult] = []
    t0 = time.perf_counter()
    try:
        worker = RewardWorker([{"name": name, "timeout_s": timeout_s, **(options or {})}])
    except Exception as e:
        return [CheckResult("loads", False, f"{type(e).__name__}: {e}", time.perf_counter() - t0)]
    try:
        results.append(CheckResult("loads", True, f"worker started in {worker.startup_s:.2f} s",
                                   time.perf_counter() - t0))
        _run_checks(worker, base, results, n_timing, max_ms)
    finally:
        worker.shutdown()
    return results


def _run_checks(worker, base: RewardInput, results: list[CheckResult], n_timing: int, max_ms: float) -> None:
    seen: list[SampleReward] = []
    KEY = worker.keys[0]  # noqa: N806 (the result key: the verifier's name)

    def score(completion: str) -> tuple[SampleReward, float]:
        t = time.perf_counter()
        reward = worker.score([RewardInput(base.prompt, completion, base.answer, dict(base.metadata))])[0]
        seen.append(reward)
        return reward, time.perf_counter() - t

    def scored(check: str, completion: str) -> None:
        reward, seconds = score(completion)
        failure = reward.failures.get(KEY)
        detail = f"failure: {failure}" if failure else f"value {reward.scores[KEY]:g}"
        results.append(CheckResult(check, failure is None, detail, seconds))

    scored("returns_score", base.completion)
    scored("empty", "")
    huge = (base.completion + "\n") * (_HUGE_CHARS // (len(base.completion) + 1) + 1)
    scored("huge", huge[:_HUGE_CHARS])
    scored("unicode", "答案是 42 🚀 café ñ ∑x² עברית \u202e 42")
    scored("surrogates_nul", "4\ud8002\x00 \udfff" + base.completion + "\x00")

    t = time.perf_counter()
    first, _ = score(base.completion)
    second, _ = score(base.completion)
    a, b = first.scores[KEY], second.scores[KEY]
    same = a == b and first.failures.get(KEY) == second.failures.get(KEY)
    results.append(CheckResult("deterministic", same, f"{a:g} then {b:g}", time.perf_counter() - t))

    t = time.perf_counter()
    times = [score(base.completion)[1] * 1000 for _ in range(max(1, n_timing))]
    median = statistics.median(times)
    results.append(CheckResult("latency", median <= max_ms,
                               f"median {median:.2f} ms over {len(times)} (limit {max_ms:g} ms)",
                               time.perf_counter() - t))

    non_finite = [r.failures[KEY] for r in seen if "non-finite" in r.failures.get(KEY, "")]
    results.append(CheckResult("finite", not non_finite and all(math.isfinite(r.scores[KEY]) for r in seen),
                               non_finite[0] if non_finite else f"{len(seen)} values finite", 0.0))
    killed = [r.failures[KEY] for r in seen if _is_kill(r.failures.get(KEY, ""))]
    results.append(CheckResult("no_crash_or_hang", not killed and worker.restarts == 0,
                               f"{killed[0]} ({len(killed)} samples)" if killed else
                               f"{len(seen)} samples, worker restarts {worker.restarts}", 0.0))


def _is_kill(failure: str) -> bool:
    """Did the worker have to kill its process, or did the process die? (Both reasons
    name "verifier process"; a verifier's own timeout, e.g. math-verify's, does not.)"""
    return "verifier process" in failure


def format_table(results: list[CheckResult]) -> str:
    """A fixed-width pass/fail table, one line per check, and a summary line."""
    width = max([len(r.name) for r in results] + [5])
    lines = [f"{'check':<{width}}  result  {'seconds':>7}  detail"]
    for r in results:
        lines.append(f"{r.name:<{width}}  {'PASS' if r.passed else 'FAIL':<6}  {r.seconds:7.3f}  {r.detail}")
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed}/{len(results)} passed" + (f", {failed} FAILED" if failed else ""))
    return "\n".join(lines)
