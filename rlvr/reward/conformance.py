"""Conformance kit for verifier plugins: does a verifier keep the contract?

`check_verifier(name, options, samples=...)` loads the verifier (a registered name or a
"package.module:attr" path) inside a `RewardWorker` child process, exactly as training
does, so a verifier that hangs or kills its process fails a check instead of hanging the
kit. It scores the given samples (`rlvr.reward.samples`: rows of a samples file; without
them one built-in sample, "6 times 7" with answer "42") and hostile variants of them, and
returns one `CheckResult` per contract item, each PASS, FAIL or SKIP:

  loads            the worker starts: the options are valid, the import works
  returns_score    every sample gives a Score or a number, not a failure
  expected         rows with `expect` / `expect_min` / `expect_max` get such scores
  empty            an empty completion is scored, not failed
  huge             a 1 MB completion is scored within the timeout
  unicode          CJK, emoji, combining and right-to-left text is scored
  surrogates_nul   lone surrogates and NUL bytes are scored
  deterministic    each sample scored twice gives the same value both times
  latency          median round-trip ms per sample (through the worker's pipe,
                   so ~0.1 ms of it is overhead) is at most `max_ms`
  batch_count      (batched verifiers) a batch of 16+ samples gets one result per sample
  batch_order      (batched verifiers) each result follows its sample: the batch, and the
                   same batch permuted, score every sample as it scores alone
  finite           no sample produced NaN or inf
  no_crash_or_hang no sample hung past `timeout_s` or killed the process

SKIP means the check had nothing to test: `expected` without a samples file; the domain
checks when the built-in sample is not one this verifier can score (answer "42" means
nothing to, say, a units verifier: pass samples); `deterministic` or `finite` when every
sample failed; `batch_order` when every sample scores the same. A SKIP is not a pass.

A wrong answer is a score, not a failure: a verifier that returns `Score(failure=...)`
for an empty or odd completion fails that check, since in training such samples would get
the failure score and be counted as failures. `format_table` prints the results.
`rlvr rewards check NAME [--samples FILE.jsonl]` is the command line.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass

from rlvr.reward.conformance_batch import FAIL, PASS, SKIP, check_batches
from rlvr.reward.samples import SampleRow
from rlvr.types import RewardInput, SampleReward

__all__ = ["CheckResult", "FAIL", "PASS", "SKIP", "check_verifier", "default_sample", "format_table"]
_HUGE_CHARS = 1 << 20
MAX_ROWS = 64  # rows of a samples file used for the hostile, determinism and batch checks
NEEDS_SAMPLES = "pass --samples FILE.jsonl with samples this verifier can score"
HOSTILE = ("empty", "huge", "unicode", "surrogates_nul")


@dataclass
class CheckResult:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def failed(self) -> bool:
        return self.status == FAIL


def default_sample() -> RewardInput:
    """An ordinary, correct sample (think block, then a bare integer answer)."""
    return RewardInput(prompt="What is 6 times 7?", completion="<think>6 * 7 = 42</think> 42", answer="42")


def check_verifier(name: str, options: dict | None = None, *, samples: list[SampleRow] | None = None,
                   timeout_s: float = 5.0, n_timing: int = 20, max_ms: float = 100.0,
                   seed: int = 0) -> list[CheckResult]:
    """Run the contract against verifier `name` built with `options`; see the module doc.

    `samples`: rows of a samples file (None: the built-in sample only); `timeout_s`: the
    worker's hard kill per call; `n_timing`: calls timed for `latency`.
    """
    from rlvr.reward.worker import RewardWorker

    t0 = time.perf_counter()
    try:
        worker = RewardWorker([{"name": name, "timeout_s": timeout_s, **(options or {})}])
    except Exception as e:
        return [CheckResult("loads", FAIL, f"{type(e).__name__}: {e}", time.perf_counter() - t0)]
    try:
        kit = _Kit(worker, samples, random.Random(seed))
        kit.add("loads", PASS, f"worker started in {worker.startup_s:.2f} s", time.perf_counter() - t0)
        kit.run(n_timing, max_ms)
        return kit.results
    finally:
        worker.shutdown()


def _same(a: SampleReward, b: SampleReward, key: str) -> bool:
    """Do two results of the same sample agree (both failed, or equal values)? Equal up to a relative
    1e-6: a model verifier (`reward_model`) scoring a sample in a padded batch is not bit-exact with
    it scored alone (another reduction order), while a result given to the wrong sample is far off."""
    fa, fb = key in a.failures, key in b.failures
    return fa == fb and (fa or math.isclose(a.scores[key], b.scores[key], rel_tol=1e-6, abs_tol=1e-9))


class _Kit:
    """One run of the checks against one worker; `results` in order."""

    def __init__(self, worker, rows: list[SampleRow] | None, rng: random.Random):
        self.worker, self.rng, self.key = worker, rng, worker.keys[0]
        self.from_file = rows is not None
        self.rows = list(rows) if rows is not None else [SampleRow(default_sample())]
        self.results: list[CheckResult] = []
        self.seen: list[SampleReward] = []
        self.singles: list[tuple[RewardInput, SampleReward]] = []  # each sample scored alone

    def add(self, name: str, status: str, detail: str, seconds: float = 0.0) -> None:
        self.results.append(CheckResult(name, status, detail, seconds))

    def score(self, sample: RewardInput) -> tuple[SampleReward, float]:
        t = time.perf_counter()
        [reward] = self.worker.score([sample])
        self.seen.append(reward)
        return reward, time.perf_counter() - t

    def failure(self, reward: SampleReward) -> str | None:
        return reward.failures.get(self.key)

    def run(self, n_timing: int, max_ms: float) -> None:
        first = self.check_rows()
        base, skip = self.base(first)
        self.check_hostile(base, skip)
        self.check_deterministic(first, skip)
        self.check_latency(base, skip, n_timing, max_ms)
        if self.worker.batch_sizes[0]:
            check_batches(self, self.singles if skip is None else [])
        self.check_finite()
        killed = [r.failures[self.key] for r in self.seen if _is_kill(r.failures.get(self.key, ""))]
        self.add("no_crash_or_hang", FAIL if killed or self.worker.restarts else PASS,
                 f"{killed[0]} ({len(killed)} samples)" if killed else
                 f"{len(self.seen)} samples, worker restarts {self.worker.restarts}")

    # ---- the checks ----

    def check_rows(self) -> list[SampleReward]:
        """returns_score and expected: every row scored alone."""
        t = time.perf_counter()
        first = []
        for row in self.rows:
            reward, _ = self.score(row.sample)
            first.append(reward)
            self.singles.append((row.sample, reward))
        seconds = time.perf_counter() - t
        failed = [(row, self.failure(r)) for row, r in zip(self.rows, first) if self.failure(r)]
        values = [r.scores[self.key] for r in first if not self.failure(r)]
        if not self.from_file and failed and _domain_failure(failed[0][1]):
            self.add("returns_score", SKIP, f"the built-in sample (answer '42') was not scored ({failed[0][1]}); "
                     + NEEDS_SAMPLES, seconds)
        elif failed:
            row, reason = failed[0]
            where = f"line {row.line}: " if self.from_file else ""
            self.add("returns_score", FAIL, f"{len(failed)}/{len(self.rows)} failed; {where}{reason}", seconds)
        else:
            self.add("returns_score", PASS, f"{len(values)} sample(s), values {min(values):g}..{max(values):g}",
                     seconds)
        self.check_expected(first)
        return first

    def check_expected(self, first: list[SampleReward]) -> None:
        rows = [(row, r) for row, r in zip(self.rows, first) if row.has_expectation]
        if not self.from_file:
            self.add("expected", SKIP, "pass --samples FILE.jsonl with expect / expect_min / expect_max")
            return
        if not rows:
            self.add("expected", SKIP, "no row of the samples file has expect / expect_min / expect_max")
            return
        wrong = [f"line {row.line}: failed: {self.failure(r)}" if self.failure(r) else row.mismatch(r.scores[self.key])
                 for row, r in rows]
        wrong = [w for w in wrong if w]
        self.add("expected", FAIL if wrong else PASS,
                 f"{len(wrong)}/{len(rows)} wrong; {wrong[0]}" if wrong else f"{len(rows)} row(s) as expected")

    def base(self, first: list[SampleReward]) -> tuple[RewardInput, str | None]:
        """The sample the hostile variants are made from, and why the domain checks skip (or None)."""
        for row, r in zip(self.rows, first):
            if not self.failure(r):
                return row.sample, None
        reason = self.failure(first[0]) or ""
        if not self.from_file:
            return self.rows[0].sample, (NEEDS_SAMPLES if _domain_failure(reason) else None)
        return self.rows[0].sample, "no sample of the file was scored (see returns_score)"

    def check_hostile(self, base: RewardInput, skip: str | None) -> None:
        huge = (base.completion + "\n") * (_HUGE_CHARS // (len(base.completion) + 1) + 1)
        completions = {"empty": "", "huge": huge[:_HUGE_CHARS],
                       "unicode": "答案是 42 🚀 café ñ ∑x² עברית \u202e 42",
                       "surrogates_nul": "4\ud8002\x00 \udfff" + base.completion + "\x00"}
        for check in HOSTILE:
            if skip:
                self.add(check, SKIP, skip)
                continue
            sample = RewardInput(base.prompt, completions[check], base.answer, dict(base.metadata))
            reward, seconds = self.score(sample)
            if check != "huge":
                self.singles.append((sample, reward))
            failure = self.failure(reward)
            self.add(check, FAIL if failure else PASS,
                     f"failure: {failure}" if failure else f"value {reward.scores[self.key]:g}", seconds)

    def check_deterministic(self, first: list[SampleReward], skip: str | None) -> None:
        t = time.perf_counter()
        if skip:
            self.add("deterministic", SKIP, skip)
            return
        pairs = [(row, a, self.score(row.sample)[0]) for row, a in zip(self.rows[:MAX_ROWS], first)]
        if all(self.failure(a) and self.failure(b) for _, a, b in pairs):
            self.add("deterministic", SKIP, "every sample failed: nothing to compare", time.perf_counter() - t)
            return
        differ = [(row, a, b) for row, a, b in pairs if not _same(a, b, self.key)]
        if differ:
            row, a, b = differ[0]
            show = [self.failure(x) or f"{x.scores[self.key]:g}" for x in (a, b)]
            where = f"line {row.line}: " if self.from_file else ""
            self.add("deterministic", FAIL, f"{len(differ)}/{len(pairs)} differ; {where}{show[0]} then {show[1]}",
                     time.perf_counter() - t)
        else:
            self.add("deterministic", PASS, f"{len(pairs)} sample(s) scored twice, same results",
                     time.perf_counter() - t)

    def check_latency(self, base: RewardInput, skip: str | None, n_timing: int, max_ms: float) -> None:
        if skip:
            self.add("latency", SKIP, skip)
            return
        t = time.perf_counter()
        times = [self.score(base)[1] * 1000 for _ in range(max(1, n_timing))]
        median = statistics.median(times)
        self.add("latency", PASS if median <= max_ms else FAIL,
                 f"median {median:.2f} ms over {len(times)} (limit {max_ms:g} ms)", time.perf_counter() - t)

    def check_finite(self) -> None:
        non_finite = [r.failures[self.key] for r in self.seen if "non-finite" in r.failures.get(self.key, "")]
        scored = [r.scores[self.key] for r in self.seen if self.key not in r.failures]
        if non_finite or not all(math.isfinite(v) for v in scored):
            self.add("finite", FAIL, non_finite[0] if non_finite else "a non-finite value")
        elif not scored:
            self.add("finite", SKIP, "no sample was scored: nothing to test")
        else:
            self.add("finite", PASS, f"{len(scored)} values finite")


def _domain_failure(reason: str) -> bool:
    """A failure that may only mean the sample means nothing to this verifier (it reported
    it could not score it, or raised), not a broken contract (NaN, wrong type, a hang)."""
    from rlvr.reward.worker import failure_kind

    return failure_kind(reason) in ("reported", "exception") and not _is_kill(reason)


def _is_kill(failure: str) -> bool:
    """Did the worker have to kill its process, or did the process die? (Both reasons
    name "verifier process"; a verifier's own timeout, e.g. math-verify's, does not.)"""
    return "verifier process" in failure


def format_table(results: list[CheckResult]) -> str:
    """A fixed-width PASS/FAIL/SKIP table, one line per check, and a summary line."""
    width = max([len(r.name) for r in results] + [5])
    lines = [f"{'check':<{width}}  result  {'seconds':>7}  detail"]
    for r in results:
        lines.append(f"{r.name:<{width}}  {r.status:<6}  {r.seconds:7.3f}  {r.detail}")
    failed = sum(r.failed for r in results)
    skipped = sum(r.status == SKIP for r in results)
    passed = len(results) - failed - skipped
    lines.append(f"{passed}/{len(results)} passed" + (f", {skipped} skipped" if skipped else "")
                 + (f", {failed} FAILED" if failed else ""))
    return "\n".join(lines)
