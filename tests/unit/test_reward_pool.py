"""The reward worker's pool of verifier processes (`rlvr.cluster.pool`): hung calls time out
together, not one after another; every kill is counted; and a plugin's process never sees
the driver's secrets (`rlvr.cluster.isolated.child_env`)."""

from __future__ import annotations

import time

import pytest

from rlvr.cluster.isolated import GRACE_S
from rlvr.reward.worker import RewardWorker, failure_kind
from rlvr.tools.worker import ToolWorker
from rlvr.types import RewardInput

HANGS = "tests.helpers.bad_verifiers:hangs"
CHAOS = "tests.helpers.bad_verifiers:chaos"
SECRETS = {"RLVR_TOKEN": "rlvr-secret", "HF_TOKEN": "hf_secret", "MY_API_KEY": "k-123", "WANDB_API_KEY": "w",
           "OPENAI_API_KEY": "sk-x", "AWS_SECRET_ACCESS_KEY": "aws", "AWS_ACCESS_KEY_ID": "id"}


def inputs(*completions: str) -> list[RewardInput]:
    return [RewardInput(prompt="p", completion=c, answer="7") for c in completions]


def test_a_verifier_that_hangs_on_every_sample_costs_one_timeout_not_n():
    """16 samples, 1 s timeout: before the pool, 16 x (1.5 s + restart) ~ 29 s one after another.
    Now: stall (0.25 s) + starting the extra processes (~0.1 s each, in parallel on 2 cores) +
    timeout + grace; 4 s of slack for a busy machine."""
    timeout = 1.0
    worker = RewardWorker([{"name": HANGS, "timeout_s": timeout, "failure_score": -1.0}], procs=2, max_procs=16)
    try:
        t0 = time.monotonic()
        results = worker.score(inputs(*["7"] * 16))
        elapsed = time.monotonic() - t0
        assert elapsed < timeout + GRACE_S + 4.0, elapsed
        assert len(results) == 16
        assert all(failure_kind(r.failures[HANGS]) == "timeout" and r.total == -1.0 for r in results)
        assert worker.kills == 16 and worker.ping()["kills"] == 16  # one killed process per hung call
        assert results[0].kills == 16 and sum(r.kills for r in results) == 16  # what RewardGroup adds up
        assert len(worker.ping()["pids"]) <= 2  # the extras were stopped after the batch
    finally:
        worker.shutdown()


def test_one_hung_sample_of_16_fails_alone_and_the_rest_go_on():
    worker = RewardWorker([{"name": CHAOS, "timeout_s": 1.0}], procs=2)
    try:
        batch = ["7"] * 16
        batch[3] = "hang"
        t0 = time.monotonic()
        results = worker.score(inputs(*batch))
        assert time.monotonic() - t0 < 1.0 + GRACE_S + 2.0
        assert failure_kind(results[3].failures[CHAOS]) == "timeout"
        assert [r.total for i, r in enumerate(results) if i != 3] == [1.0] * 15
        assert not any(r.failures for i, r in enumerate(results) if i != 3)
        assert worker.kills == 1 and results[0].kills == 1
        assert [r.total for r in worker.score(inputs("7", "8"))] == [1.0, 0.0]  # it goes on
        assert worker.kills == 1
    finally:
        worker.shutdown()


def test_a_limited_pool_still_scores_every_hung_call_in_waves():
    worker = RewardWorker([{"name": HANGS, "timeout_s": 0.5}], procs=1, max_procs=3)
    try:
        results = worker.score(inputs(*["7"] * 6))
        assert all(failure_kind(r.failures[HANGS]) == "timeout" for r in results)
        assert worker.kills == 6
    finally:
        worker.shutdown()


def test_batched_results_stay_in_order_over_the_pool():
    judge = "tests.helpers.bad_verifiers:BatchedJudge"
    worker = RewardWorker([{"name": judge, "max_batch_size": 3}, {"name": "tests.helpers.bad_verifiers:exact"}],
                          procs=3)
    try:
        batch = [str(i % 9) for i in range(20)]
        results = worker.score(inputs(*batch))
        assert [r.scores[judge] for r in results] == [float(c == "7") for c in batch]
        assert [r.parts[judge]["call_size"] for r in results] == [3.0] * 18 + [2.0] * 2
        assert [r.scores["tests.helpers.bad_verifiers:exact"] for r in results] == [float(c == "7") for c in batch]
    finally:
        worker.shutdown()


@pytest.fixture
def planted_secrets(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_a_verifier_process_never_sees_the_drivers_secrets(planted_secrets):
    key = "tests.helpers.bad_verifiers:env_names"
    worker = RewardWorker([{"name": key}], procs=1)
    try:
        seen = set(worker.score(inputs("7"))[0].parts[key])
    finally:
        worker.shutdown()
    assert not seen & set(SECRETS), seen & set(SECRETS)
    assert {"PATH", "PYTHONPATH", "LC_ALL", "OMP_NUM_THREADS"} <= seen
    secret_words = {"TOKEN", "SECRET", "KEY", "PASSWORD", "CREDENTIALS"}
    assert not [name for name in seen if secret_words & set(name.split("_"))], seen


def test_env_passthrough_lets_named_variables_through(planted_secrets):
    key = "tests.helpers.bad_verifiers:env_names"
    worker = RewardWorker([{"name": key}], procs=1, env_passthrough=["MY_API_KEY"])
    try:
        seen = set(worker.score(inputs("7"))[0].parts[key])
    finally:
        worker.shutdown()
    assert "MY_API_KEY" in seen and not seen & (set(SECRETS) - {"MY_API_KEY"})


def test_a_tool_process_never_sees_the_drivers_secrets(planted_secrets):
    worker = ToolWorker([{"name": "tests.helpers.bad_tools:env_names"}], procs=1)
    try:
        [result] = worker.call([("env_names", {})])
    finally:
        worker.shutdown()
    seen = set(result.text.split("\n"))
    assert result.failure is None and "PATH" in seen
    assert not seen & set(SECRETS), seen & set(SECRETS)


def test_env_passthrough_must_be_a_list_of_names():
    from rlvr.config import RewardConfig
    from rlvr.config.checks import RecipeError

    with pytest.raises(RecipeError, match="reward.env_passthrough"):
        RewardConfig(env_passthrough="OPENAI_API_KEY").check()
    with pytest.raises(RecipeError, match="reward.max_procs_per_worker"):
        RewardConfig(procs_per_worker=4, max_procs_per_worker=2).check()
