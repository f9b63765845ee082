"""Reward pool worker: runs verifiers in a child process with a hard wall-clock kill.

Design. A `RewardWorker` is a plain class; the driver makes it a *sync* Ray actor
(`ray.remote(num_cpus=cfg.cpus_per_worker)(RewardWorker)`), and tests use it
directly. It owns a small pool of long-lived child Python processes
(`reward.procs_per_worker`, default 2; `rlvr.cluster.pool`) that load the verifiers
once and each score one call at a time in their main thread, which math-verify's
`signal.alarm` timeouts need. The calls of a batch run side by side over the pool.

The hard kill is `rlvr.cluster.isolated` (shared with the tools of multi-turn rollouts):
each call has its own deadline, `timeout_s + GRACE_S` from when its process started it; on
expiry that process is SIGKILLed (with its process group), the call's pairs get a timeout
failure, and a replacement starts in the background while the other processes go on. While
every process is stuck and samples wait, extra processes start (up to
`reward.max_procs_per_worker`), so a verifier that hangs on every sample costs a step about
one timeout, not one per sample. A process that dies on its own (os._exit, segfault) fails
the call in flight the same way. Every kill counts in `kills` (`faults/reward_kills`).
Exceptions, NaN/inf and non-numeric returns are caught in the child and come back as
failures. A failed pair gets its verifier's `failure_score` and is listed in
`SampleReward.failures`, never crashing a run.

Measured on the 2-core CI machine kind (busy): child start 0.1 s with `format`
only, 0.6 s with `math` (sympy import), paid once and again after each kill;
512 integer samples through `math` take 15-20 ms (fast path; pipe overhead
~0.03 ms per pair), 0.2-0.4 s without it, ~0.5 s for "The answer is \boxed{n}".

Batched verifiers. A verifier whose function or class has `batched = True` is
called with a list of samples and returns a list of results, one per sample
(an LLM judge or a remote service scores many samples per request). It may set
`max_batch_size` (an int) to cap the list; otherwise it gets every sample of the
worker's shard in one call. Its `timeout_s` bounds each call (one chunk), not
each sample. A call that raises, hangs or returns the wrong number of results
fails every sample of that chunk, and only that chunk.

Set-up. A verifier object with a `setup()` method (a model to load: `reward_model`) has it
called once when its process starts, inside the start-up allowance (not a call's
`timeout_s`); the recipe check (`rlvr.cluster.plugin_check`) builds verifiers without it.

The unit of work is a *call*: `(k, [i, ...])`, verifier k on samples i. A
per-sample verifier makes one call per sample; a batched one one call per chunk.
The parent sends the calls in order and reads one result per (sample, verifier)
pair back, so the protocol is the same for both kinds.

Result keys: each configured verifier is reported under its `name`, or
`name#i` (i = its index in `reward.verifiers`) when a name appears twice
(`rlvr.config.reward.verifier_keys`).
"""

from __future__ import annotations

import dataclasses
import math
import re

from rlvr.cluster.isolated import GRACE_S, IsolatedChild, SetupError, call, raised, serve
from rlvr.cluster.pool import ChildPool, Job
from rlvr.config.reward import VerifierItem
from rlvr.types import RewardInput, SampleReward, Score

__all__ = ["GRACE_S", "RewardWorker", "failure_kind", "failure_report", "part_metrics", "reward_metrics"]


class VerifierProcess(IsolatedChild):
    """One child process holding the verifiers."""

    entry = "rlvr.reward.worker:_child_main"
    label = "reward worker"
    what = "verifier process"
    plugins = "the verifiers"


class RewardWorker:
    """Scores batches with every configured verifier, in a pool of child processes.

    `verifiers`: the recipe's `reward.verifiers` items, `{name, weight=1.0,
    timeout_s=default_timeout_s, failure_score=default_failure_score, **options}`;
    the options go to the verifier's constructor. `procs`, `max_procs`, `env_passthrough`:
    `reward.procs_per_worker`, `reward.max_procs_per_worker`, `reward.env_passthrough`.
    """

    def __init__(self, verifiers: list[dict], default_timeout_s: float = 5.0, default_failure_score: float = 0.0,
                 procs: int = 2, max_procs: int = 16, env_passthrough: list[str] | tuple = ()):
        self.specs = [dataclasses.replace(
            item, timeout_s=default_timeout_s if item.timeout_s is None else float(item.timeout_s),
            failure_score=default_failure_score if item.failure_score is None else float(item.failure_score))
            for item in VerifierItem.parse(list(verifiers))]
        self.keys = [s.key for s in self.specs]
        payload = [(s.key, s.name, s.options) for s in self.specs]
        passthrough = tuple(env_passthrough)
        self._pool = ChildPool(lambda wait: VerifierProcess(payload, passthrough, wait=wait), procs, max_procs)

    @property
    def batch_sizes(self) -> list[int]:
        """Per verifier: 0 = one sample per call; n = batched, up to n per call (the child's answer)."""
        return list(self._pool.info)

    @property
    def kills(self) -> int:
        """Verifier processes killed on a timeout or found dead, so far."""
        return self._pool.kills

    restarts = kills  # the older name: each killed process is replaced

    @property
    def startup_s(self) -> float:
        return self._pool.children[0].startup_s

    def pid(self) -> int | None:
        pids = self._pool.pids()
        return pids[0] if pids else None

    # ---- public API (Ray actor methods) ----

    def score(self, inputs: list[RewardInput]) -> list[SampleReward]:
        """Score every sample with every verifier; one result per input, in order. The first
        result carries the processes killed meanwhile (`SampleReward.kills`)."""
        results: list[dict[int, Score]] = [{} for _ in inputs]
        jobs = [Job(("score", [(k, [(i, inputs[i]) for i in idx])]), len(idx), self.specs[k].timeout_s, (k, idx))
                for k, idx in plan_calls(len(inputs), self.batch_sizes)]
        kills = self.kills
        self._pool.run(jobs, lambda job, message: self._record(job, message, results),
                       lambda job, reason: self._fail(job, reason, results))
        out = [self._combine(r) for r in results]
        if out:
            out[0].kills = self.kills - kills
        return out

    def ping(self) -> dict:
        """Liveness and bookkeeping: child pids (`pid`: the first), kills so far, result keys."""
        return {"pid": self.pid(), "pids": self._pool.pids(), "restarts": self.kills, "kills": self.kills,
                "startup_s": self.startup_s, "keys": list(self.keys), "batch_sizes": list(self.batch_sizes)}

    def shutdown(self) -> None:
        self._pool.shutdown()

    # ---- scoring ----

    @staticmethod
    def _record(job: Job, message, results: list[dict[int, Score]]) -> None:
        k, idx = job.tag
        i, got_k, value, parts, failure = message
        if got_k != k or i not in idx or k in results[i]:
            raise RuntimeError(f"reward worker: protocol error, got {(i, got_k)} for verifier {k} on {idx}")
        results[i][k] = Score(value, parts, failure)

    def _fail(self, job: Job, reason: str, results: list[dict[int, Score]]) -> None:
        """A call whose process hung (killed) or died: each of its pairs not yet scored fails."""
        k, idx = job.tag
        for i in idx:
            results[i].setdefault(k, Score(self.specs[k].failure_score, failure=reason))

    def _combine(self, scores: dict[int, Score]) -> SampleReward:
        used: dict[str, float] = {}
        failures: dict[str, str] = {}
        parts: dict[str, dict[str, float]] = {}
        total = 0.0
        for k, spec in enumerate(self.specs):
            score = scores[k]
            value = score.value
            if score.failure is not None:
                failures[spec.key] = score.failure
                value = spec.failure_score
            elif score.parts:
                parts[spec.key] = dict(score.parts)
            used[spec.key] = value
            total += spec.weight * value
        return SampleReward(total=total, scores=used, failures=failures, parts=parts)


FAILURE_KINDS = ("timeout", "exception", "invalid", "reported", "truncated", "unparsed", "http")


def failure_kind(reason: str) -> str:
    """The kind a failure reason starts with: `timeout` (killed or timed out), `exception`
    (raised, or its process died), `invalid` (NaN, inf, wrong type) or `reported` (the
    verifier's own explicit failure). Model verifiers name theirs: `truncated` (the input is
    longer than the model takes: `reward_model`), `unparsed` (no verdict in a judge's answer)
    and `http` (the judge's endpoint answered with an error: `judge`).

    >>> failure_kind("timeout: no answer after 5 s"), failure_kind("could not parse the tests")
    ('timeout', 'reported')
    >>> failure_kind("unparsed: no score in 'I think so'")
    'unparsed'
    """
    head = reason.split(":", 1)[0].strip()
    return head if head in FAILURE_KINDS else "reported"


MAX_PARTS = 16  # distinct part names per verifier reported in a step's metrics
_RESERVED_PARTS = ("mean", "failures")  # metric names rlvr writes itself under reward/<key>/


def reward_metrics(results: list[SampleReward], max_parts: int = MAX_PARTS) -> dict[str, float]:
    """Per-verifier metrics for a batch: `reward/<key>/mean` (of the values used in the
    totals, failure scores included), `reward/<key>/failures` (a count) and one count
    per failure kind, `reward/<key>/failures/<kind>`; and each of the verifier's `parts`,
    averaged over the samples that report it, as `reward/<key>/<part>` (see `part_metrics`).

    >>> m = reward_metrics([SampleReward(1.0, {"math": 1.0}, {}, {"math": {"correct": 1.0}}),
    ...                     SampleReward(0.0, {"math": 0.0}, {"math": "invalid: NaN"})])
    >>> m["reward/math/mean"], m["reward/math/failures"], m["reward/math/failures/invalid"], m["reward/math/correct"]
    (0.5, 1.0, 1.0, 1.0)
    """
    keys = list(dict.fromkeys(key for r in results for key in r.scores))
    metrics: dict[str, float] = {}
    for key in keys:
        values = [r.scores[key] for r in results if key in r.scores]
        metrics[f"reward/{key}/mean"] = sum(values) / len(values)
        reasons = [r.failures[key] for r in results if key in r.failures]
        metrics[f"reward/{key}/failures"] = float(len(reasons))
        for kind in FAILURE_KINDS:
            metrics[f"reward/{key}/failures/{kind}"] = float(sum(failure_kind(x) == kind for x in reasons))
        metrics.update(part_metrics(key, [r.parts.get(key) or {} for r in results], max_parts))
    return metrics


def part_metrics(key: str, parts: list[dict], max_parts: int = MAX_PARTS) -> dict[str, float]:
    """`reward/<key>/<part>`: the mean of each part over the samples that report it as a finite
    number. Names are cut to 64 characters, anything but letters, digits, `_ . -` becomes `_`,
    and `mean` / `failures` (rlvr's own metrics) are left out; only the first `max_parts`
    names in sorted order are kept, so a verifier cannot flood the metrics row with names.

    >>> part_metrics("units", [{"unit_ok": 1, "dist/km": 2.0}, {"unit_ok": 0, "mean": 5}, {"x": float("nan")}])
    {'reward/units/dist_km': 2.0, 'reward/units/unit_ok': 0.5}
    >>> len(part_metrics("bad", [{f"p{i}": 1.0 for i in range(1000)}], max_parts=16))
    16
    """
    sums: dict[str, list[float]] = {}
    for sample_parts in parts:
        for name, value in sample_parts.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            clean = re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)[:64]) or "_"
            if clean in _RESERVED_PARTS:
                continue
            total = sums.setdefault(clean, [0.0, 0])
            total[0] += float(value)
            total[1] += 1
    return {f"reward/{key}/{name}": sums[name][0] / sums[name][1] for name in sorted(sums)[:max(0, max_parts)]}


def failure_report(results: list[SampleReward], completions: list[str]) -> dict[str, tuple[int, str]]:
    """Per verifier key that failed in this batch: (count, one example reason with its completion)."""
    out: dict[str, tuple[int, str]] = {}
    for r, completion in zip(results, completions):
        for key, reason in r.failures.items():
            count, example = out.get(key, (0, ""))
            if not example:
                example = f"{reason[:200]} (completion {completion[:80]!r})"
            out[key] = (count + 1, example)
    return out


def plan_calls(num_samples: int, batch_sizes: list[int]) -> list[tuple[int, list[int]]]:
    """The calls that score `num_samples` samples with every verifier: `(k, [i, ...])`.
    Per-sample verifiers (batch size 0) first, sample by sample; then each batched
    verifier over consecutive chunks of at most its batch size.

    >>> plan_calls(3, [0, 2])
    [(0, [0]), (0, [1]), (0, [2]), (1, [0, 1]), (1, [2])]
    """
    calls = [(k, [i]) for i in range(num_samples) for k, size in enumerate(batch_sizes) if not size]
    for k, size in enumerate(batch_sizes):
        if size:
            calls += [(k, list(range(start, min(start + size, num_samples)))) for start in range(0, num_samples, size)]
    return calls


def batch_size_of(verifier) -> int:
    """0 for a per-sample verifier; for one marked `batched = True`, its `max_batch_size`
    (an int >= 1), or a very large number when it sets none."""
    if not getattr(verifier, "batched", False):
        return 0
    size = getattr(verifier, "max_batch_size", None)
    if size is None:
        return 1 << 30
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"max_batch_size must be an int >= 1, got {size!r}")
    return size


# ---- the child process ----


def _child_main() -> None:
    """Entry point of the child: load the verifiers, then score batches until told to stop."""
    serve(_load_verifiers, _score)


def _load_verifiers(specs) -> tuple[list, list[int]]:
    from rlvr.plugins import load_verifier

    fns, sizes = [], []
    for key, name, options in specs:
        try:
            fns.append(load_verifier(name, options))
            if callable(getattr(fns[-1], "setup", None)):  # load a model once, in the start-up allowance
                fns[-1].setup()
            sizes.append(batch_size_of(fns[-1]))
        except BaseException as e:
            raise SetupError(f"{key}: {type(e).__name__}: {e}") from None
    return (fns, sizes), sizes


def _score(state, calls, send) -> None:
    fns, sizes = state
    for k, items in calls:
        samples = [sample for _, sample in items]
        outcomes = _run_batch(fns[k], samples) if sizes[k] else [_run_one(fns[k], samples[0])]
        for (i, _), outcome in zip(items, outcomes):
            send((i, k) + outcome)


def _run_one(fn, sample: RewardInput) -> tuple[float, dict, str | None]:
    """Call one verifier on one sample; every problem becomes a failure reason, never an exception."""
    try:
        return _outcome(call(fn, sample))
    except BaseException as e:  # SystemExit and math-verify's TimeoutException too
        return 0.0, {}, raised(e)


def _run_batch(fn, samples: list[RewardInput]) -> list[tuple[float, dict, str | None]]:
    """Call a batched verifier once on `samples`; a failure of the call fails each sample."""
    try:
        results = call(fn, samples)
        if not isinstance(results, (list, tuple)) or len(results) != len(samples):
            got = f"{len(results)} results" if isinstance(results, (list, tuple)) else type(results).__name__
            reason = f"invalid: batched verifier returned {got} for {len(samples)} samples"
            return [(0.0, {}, reason)] * len(samples)
        return [_outcome(r) for r in results]
    except BaseException as e:
        return [(0.0, {}, raised(e))] * len(samples)


def _outcome(result) -> tuple[float, dict, str | None]:
    """A verifier's return value as (value, parts, failure reason)."""
    try:
        score = Score.coerce(result)
        parts = {str(name): float(v) for name, v in score.parts.items()}
    except Exception as e:  # parts that are not numbers
        return 0.0, {}, f"invalid: {type(e).__name__}: {e}"
    failure = None if score.failure is None else str(score.failure)
    if failure is not None and failure_kind(failure) == "reported" and not failure.startswith("reported:"):
        failure = f"reported: {failure}"  # the verifier's own explicit reason
    return float(score.value), parts, failure


class LocalRewards:
    """A `RewardWorker` in this process behind the reward group's `submit` / `collect` (`rlvr eval`,
    `rlvr sample`, tests)."""

    def __init__(self, worker: RewardWorker):
        self.worker = worker

    def submit(self, prompts, completions) -> list[RewardInput]:
        return [RewardInput.of(prompts[c.prompt_index], c) for c in completions]

    def collect(self, inputs: list[RewardInput], timeout_s: float | None = None) -> list[SampleReward]:
        return self.worker.score(inputs)
