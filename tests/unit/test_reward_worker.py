"""RewardWorker used directly (it is a plain class; Ray only wraps it): verifiers that
raise, hang, return NaN or kill their process fail only their own sample."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from rlvr.reward.worker import FAILURE_KINDS, RewardWorker, failure_kind, reward_metrics
from rlvr.types import RewardInput, SampleReward

CHAOS = "tests.helpers.bad_verifiers:chaos"


def inputs(*completions: str, answer: str = "7") -> list[RewardInput]:
    return [RewardInput(prompt="p", completion=c, answer=answer) for c in completions]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) still answers kill(0): look at its state
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def worker():
    # chaos: weight 2, failure -1; format: weight 0.5 on "the answer is digits"
    w = RewardWorker([
        {"name": CHAOS, "weight": 2.0, "timeout_s": 1.0, "failure_score": -1.0},
        {"name": "format", "weight": 0.5, "require_think": False, "pattern": r"\d+"},
    ], default_timeout_s=5.0, default_failure_score=0.0)
    yield w
    w.shutdown()


KINDS = {"raise": "exception", "hang": "timeout", "nan": "invalid", "exit": "exception",
         "segfault": "exception", "none": "invalid"}


def test_each_bad_sample_fails_alone(worker):
    batch = ["7", "raise", "7", "hang", "8", "nan", "7", "exit", "7", "segfault", "none", "7"]
    restarts = worker.ping()["restarts"]
    results = worker.score(inputs(*batch))
    assert len(results) == len(batch)
    reasons = {
        "raise": "RuntimeError: verifier exploded",
        "hang": "timeout: no answer after 1 s",
        "nan": "non-finite score nan",
        "exit": "exited with code 1",
        "segfault": "signal SIGSEGV",
        "none": "returned NoneType",
    }
    for completion, r in zip(batch, results):
        if completion in reasons:
            # chaos failed: 2 * (-1); the format verifier still scored (0: not digits)
            assert r.failures.keys() == {CHAOS}, completion
            assert reasons[completion] in r.failures[CHAOS]
            assert failure_kind(r.failures[CHAOS]) == KINDS[completion]
            assert r == SampleReward(total=-2.0, scores={CHAOS: -1.0, "format": 0.0}, failures=r.failures,
                                     parts={"format": {"pattern": 0.0}})
        elif completion == "7":  # 2 * 1 + 0.5 * 1
            assert r == SampleReward(total=2.5, scores={CHAOS: 1.0, "format": 1.0}, failures={},
                                     parts={"format": {"pattern": 1.0}})
        else:  # "8": wrong but well-formed: 2 * 0 + 0.5 * 1
            assert r == SampleReward(total=0.5, scores={CHAOS: 0.0, "format": 1.0}, failures={},
                                     parts={"format": {"pattern": 1.0}})
    assert worker.ping()["restarts"] == restarts + 3  # hang, exit, segfault; not raise/nan/none

    metrics = reward_metrics(results)
    assert metrics[f"reward/{CHAOS}/failures"] == 6.0
    assert metrics["reward/format/failures"] == 0.0
    assert metrics[f"reward/{CHAOS}/mean"] == pytest.approx((5 * 1.0 + 0.0 + 6 * -1.0) / 12)


def test_timeout_kill_takes_the_verifiers_helpers_too(worker, tmp_path):
    pid_file = tmp_path / "helper.pid"
    sample = RewardInput(prompt="p", completion="spawn-and-hang", answer="7", metadata={"pid_file": str(pid_file)})
    results = worker.score([sample, *inputs("7")])
    assert results[0].failures[CHAOS].startswith("timeout:") and results[1].total == 2.5
    helper = int(pid_file.read_text())
    deadline = time.monotonic() + 5  # orphaned on kill, then reaped by init
    while pid_alive(helper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(helper)


def test_child_lives_across_batches(worker):
    pid = worker.ping()["pid"]
    for _ in range(3):
        assert [r.total for r in worker.score(inputs("7", "1"))] == [2.5, 0.5]
    assert worker.ping()["pid"] == pid
    assert worker.score([]) == []


def test_child_killed_while_idle_is_restarted_without_failures(worker):
    os.kill(worker.ping()["pid"], signal.SIGKILL)  # the child this test's worker started
    time.sleep(0.2)
    results = worker.score(inputs("7"))
    assert results[0].failures == {} and results[0].total == 2.5


def test_math_trap_is_killed_by_the_hard_timeout():
    """`9^{9^{9^{9}}}` holds the GIL in C: with math-verify's alarms off, only the kill stops it."""
    w = RewardWorker([{"name": "math", "timeout_s": 1.0, "parsing_timeout": None, "verify_timeout": None}],
                     default_timeout_s=5.0, default_failure_score=-0.5)
    try:
        t0 = time.perf_counter()
        results = w.score(inputs("\\boxed{85}", "\\boxed{9^{9^{9^{9}}}}", "The answer is $85$", "84", answer="85"))
        assert time.perf_counter() - t0 < 20
        assert [r.total for r in results] == [1.0, -0.5, 1.0, 0.0]
        assert results[1].failures["math"].startswith("timeout: no answer after 1 s")
        assert [bool(r.failures) for r in results] == [False, True, False, False]
        assert w.ping()["restarts"] == 1
    finally:
        w.shutdown()


def test_math_verify_own_timeout_is_a_failure_not_a_zero():
    """With its alarms on (the default), math-verify gives up by itself: reported, no kill."""
    w = RewardWorker([{"name": "math", "timeout_s": 4.0, "parsing_timeout": 1, "verify_timeout": 1}], 5.0, 0.0)
    try:
        results = w.score(inputs("\\boxed{9^{9^{9^{9}}}}", "85", answer="85"))
        assert "math-verify timed out" in results[0].failures["math"]
        assert results[1].total == 1.0 and results[1].failures == {}
        assert w.ping()["restarts"] == 0
    finally:
        w.shutdown()


def test_weights_and_duplicate_names():
    w = RewardWorker([
        {"name": "tests.helpers.bad_verifiers:Constant", "value": 0.5, "weight": 3.0},
        {"name": "tests.helpers.bad_verifiers:Constant", "value": 1.0, "weight": -0.25},
        {"name": "format", "require_think": True},
    ], default_timeout_s=5.0, default_failure_score=0.0)
    try:
        assert w.ping()["keys"] == ["tests.helpers.bad_verifiers:Constant#0",
                                    "tests.helpers.bad_verifiers:Constant#1", "format"]
        good, bad = w.score(inputs("<think>hm</think> 7", "7"))
        assert good.total == pytest.approx(3.0 * 0.5 - 0.25 * 1.0 + 1.0)  # 2.25
        assert bad.total == pytest.approx(3.0 * 0.5 - 0.25 * 1.0 + 0.0)  # 1.25
        assert bad.scores["format"] == 0.0 and bad.failures == {}
    finally:
        w.shutdown()


@pytest.mark.parametrize("item,match", [
    ({"name": "format", "timeout_s": 0}, r"reward.verifiers\[0\].timeout_s"),
    ({"name": "format", "weight": "high"}, r"reward.verifiers\[0\].weight"),
    ({"name": "format", "failure_score": float("nan")}, r"reward.verifiers\[0\].failure_score"),
    ({"weight": 1.0}, r"reward.verifiers\[0\].name"),
])
def test_bad_settings_are_rejected_before_starting(item, match):
    with pytest.raises(ValueError, match=match):
        RewardWorker([item], 5.0, 0.0)


@pytest.mark.parametrize("item,match", [
    ({"name": "tests.helpers.bad_verifiers:FailsToLoad"}, "cannot load"),
    ({"name": "format", "patern": "x"}, "patern"),
    ({"name": "tests.helpers.missing:f"}, "tests.helpers.missing"),
    ({"name": "no-such-verifier"}, "unknown verifier"),
])
def test_verifier_that_cannot_load_fails_the_constructor(item, match):
    with pytest.raises(RuntimeError, match=match):
        RewardWorker([item], 5.0, 0.0)


def test_shutdown_stops_the_child():
    w = RewardWorker([{"name": "format"}], 5.0, 0.0)
    pid = w.ping()["pid"]
    w.shutdown()
    w.shutdown()
    assert not pid_alive(pid)


def test_hung_child_dies_with_its_parent():
    """A parent killed while its child is stuck in C must not leave the child spinning."""
    code = (
        "import sys; from rlvr.reward.worker import RewardWorker; from rlvr.types import RewardInput\n"
        f"w = RewardWorker([{{'name': {CHAOS!r}, 'timeout_s': 600}}], 5.0, 0.0)\n"
        "print(w.ping()['pid'], flush=True)\n"
        "w.score([RewardInput('p', 'hang', '7')])\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        time.sleep(0.5)
        assert pid_alive(child_pid)
    finally:
        parent.kill()  # the parent this test started
        parent.wait()
    deadline = time.monotonic() + 5
    while pid_alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child_pid)


def test_reward_metrics_hand_checked():
    results = [
        SampleReward(total=1.5, scores={"math": 1.0, "format": 1.0}, failures={}),
        SampleReward(total=0.0, scores={"math": 0.0, "format": 0.0}, failures={"math": "timeout: no answer"}),
        SampleReward(total=0.5, scores={"math": 0.0, "format": 1.0}, failures={}),
    ]
    zero_kinds = {f"reward/{key}/failures/{kind}": 0.0 for key in ("math", "format")
                  for kind in FAILURE_KINDS}
    assert reward_metrics(results) == {
        **zero_kinds,
        "reward/math/mean": 1 / 3,  # (1 + 0 + 0) / 3
        "reward/math/failures": 1.0,
        "reward/math/failures/timeout": 1.0,
        "reward/format/mean": 2 / 3,  # (1 + 0 + 1) / 3
        "reward/format/failures": 0.0,
    }
    assert reward_metrics([]) == {}


def test_hostile_completions_never_stall_past_the_deadline():
    """Deeply nested LaTeX, a huge power, 1 MB, lone surrogates, NUL bytes: each sample
    returns within its timeout (+ the kill grace) + 1 s, and the worker keeps scoring."""
    from rlvr.reward.worker import GRACE_S

    timeout = 2.0
    worker = RewardWorker([{"name": "math", "timeout_s": timeout}], default_timeout_s=timeout)
    hostile = ["\\boxed{" * 500 + "1" + "}" * 500, "\\boxed{9^{9^{9^{9}}}}", "1" * 1_000_000,
               "\ud800\udfff lone surrogates \\boxed{7}", "nul\x00bytes \\boxed{3}", "\\frac{" * 2000]
    try:
        for text in hostile:
            start = time.monotonic()
            [result] = worker.score([RewardInput(prompt="q", completion=text, answer="7")])
            elapsed = time.monotonic() - start
            assert elapsed < timeout + GRACE_S + 1.0, (text[:40], elapsed)
            assert result.total in (0.0, 1.0)
        [ok] = worker.score([RewardInput(prompt="q", completion="7", answer="7")])
        assert ok.total == 1.0 and not ok.failures
    finally:
        worker.shutdown()


def test_async_verifiers_are_awaited():
    worker = RewardWorker([{"name": "tests.helpers.bad_verifiers:async_exact"}], default_timeout_s=5.0)
    try:
        results = worker.score([RewardInput(prompt="q", completion=c, answer="7") for c in ("7", "8")])
        assert [r.total for r in results] == [1.0, 0.0] and not any(r.failures for r in results)
    finally:
        worker.shutdown()


BATCHED = "tests.helpers.bad_verifiers:batched_exact"


def test_batched_verifier_gets_the_whole_shard_in_one_call():
    worker = RewardWorker([{"name": BATCHED}, {"name": "tests.helpers.bad_verifiers:exact", "weight": 0.5}])
    try:
        assert worker.ping()["batch_sizes"][1] == 0 and worker.ping()["batch_sizes"][0] > 1000
        results = worker.score(inputs("7", "8", "7", "x", "7"))
        assert [r.total for r in results] == [1.5, 0.0, 1.5, 0.0, 1.5]
        assert all(r.parts[BATCHED] == {"call_size": 5.0} for r in results)
        assert not any(r.failures for r in results)
    finally:
        worker.shutdown()


def test_batched_async_class_verifier_is_chunked_by_max_batch_size():
    worker = RewardWorker([{"name": "tests.helpers.bad_verifiers:BatchedJudge", "max_batch_size": 2}])
    try:
        results = worker.score(inputs("7", "8", "7", "7", "7"))
        assert [r.total for r in results] == [1.0, 0.0, 1.0, 1.0, 1.0]
        key = "tests.helpers.bad_verifiers:BatchedJudge"
        assert [r.parts[key]["call_size"] for r in results] == [2.0, 2.0, 2.0, 2.0, 1.0]
    finally:
        worker.shutdown()


@pytest.mark.parametrize("bad, kind, reason", [
    ("raise", "exception", "RuntimeError: batch exploded"),
    ("hang", "timeout", "no answer after 1 s"),
    ("short", "invalid", "returned 4 results for 5 samples"),
])
def test_a_failing_batched_call_fails_only_its_own_chunk(bad, kind, reason):
    # chunks of 2: [7, 8] [bad, 7] [7]; a per-sample verifier beside it is unaffected
    worker = RewardWorker([{"name": "tests.helpers.bad_verifiers:BatchedJudge", "max_batch_size": 2},
                           {"name": BATCHED, "timeout_s": 1.0, "failure_score": -1.0}], default_timeout_s=1.0)
    judge = "tests.helpers.bad_verifiers:BatchedJudge"
    try:
        t0 = time.monotonic()
        results = worker.score(inputs("7", "8", bad, "7", "7"))
        assert time.monotonic() - t0 < 1.0 + 0.5 + 5.0  # one timeout at most, plus a child restart
        # the whole-shard verifier sees `bad` in its single call: every sample fails with it
        assert all(failure_kind(r.failures[BATCHED]) == kind and reason in r.failures[BATCHED] for r in results)
        assert all(r.scores[BATCHED] == -1.0 for r in results)
        # the chunked judge ran on its own chunks, which scored normally (its code ignores `bad`)
        assert [r.scores[judge] for r in results] == [1.0, 0.0, 0.0, 1.0, 1.0]
        assert not any(judge in r.failures for r in results)
    finally:
        worker.shutdown()


def test_batched_timeout_fails_the_chunk_and_scores_the_rest():
    worker = RewardWorker([{"name": BATCHED, "timeout_s": 1.0}], default_timeout_s=1.0)
    try:
        results = worker.score(inputs("hang", "7"))
        assert all(failure_kind(r.failures[BATCHED]) == "timeout" for r in results)
        assert worker.ping()["restarts"] == 1
        [ok] = worker.score(inputs("7"))
        assert ok.total == 1.0 and not ok.failures
    finally:
        worker.shutdown()
