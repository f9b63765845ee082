"""The reward worker as a real (sync) Ray actor, the way the driver runs it."""

from __future__ import annotations

from rlvr.reward.worker import RewardWorker, reward_metrics
from rlvr.types import RewardInput

CHAOS = "tests.helpers.bad_verifiers:chaos"


def test_reward_worker_actor_survives_hang_and_crash(ray_cluster):
    ray = ray_cluster
    actor = ray.remote(num_cpus=0.5)(RewardWorker).remote(
        [{"name": "math", "weight": 1.0}, {"name": CHAOS, "weight": 0.5, "timeout_s": 1.0, "failure_score": -1.0}],
        default_timeout_s=5.0, default_failure_score=0.0)
    try:
        first = ray.get(actor.ping.remote(), timeout=120)
        assert first["keys"] == ["math", CHAOS] and first["pid"] is not None

        completions = ["7", "hang", "<think>5</think> \\boxed{7}", "exit", "8"]
        batch = [RewardInput(prompt="Q: 3+4=? A:", completion=c, answer="7") for c in completions]
        results = ray.get(actor.score.remote(batch), timeout=120)

        # math runs in the actor's child process (signal.alarm needs its main thread)
        assert [r.scores["math"] for r in results] == [1.0, 0.0, 1.0, 0.0, 0.0]
        assert [r.scores[CHAOS] for r in results] == [1.0, -1.0, 0.0, -1.0, 0.0]
        assert [r.total for r in results] == [1.5, -0.5, 1.0, -0.5, 0.0]  # math + 0.5 * chaos
        assert results[1].failures[CHAOS].startswith("timeout:")
        assert "exited with code 1" in results[3].failures[CHAOS]
        assert [set(r.failures) for r in results] == [set(), {CHAOS}, set(), {CHAOS}, set()]

        after = ray.get(actor.ping.remote(), timeout=60)
        assert after["restarts"] == first["restarts"] + 2

        again = ray.get(actor.score.remote(batch[:1]), timeout=60)  # the child lives on
        assert again[0].total == 1.5 and ray.get(actor.ping.remote())["pid"] == after["pid"]

        metrics = reward_metrics(results)
        assert metrics[f"reward/{CHAOS}/failures"] == 2.0 and metrics["reward/math/failures"] == 0.0
        ray.get(actor.shutdown.remote(), timeout=60)
    finally:
        ray.kill(actor)


def test_verifier_kills_reach_the_fault_metrics(ray_cluster):
    """Each verifier process killed in a reward worker (a Ray actor) is counted by the group and
    shows as `faults/reward_kills`; `faults/reward_restarts` stays the actors replaced."""
    import time
    from types import SimpleNamespace

    from rlvr.config import RewardConfig
    from rlvr.loop.train import Groups
    from rlvr.reward.group import RewardGroup
    from rlvr.types import Completion

    hangs = "tests.helpers.bad_verifiers:hangs"
    group = RewardGroup([{"name": hangs, "timeout_s": 1.0}], RewardConfig(num_workers=2, cpus_per_worker=0.5))
    try:
        completions = [Completion(prompt_index=0, token_ids=[1], logprobs=[0.0], text="7", finish_reason="stop") for _ in range(8)]
        prompts = [SimpleNamespace(text="p", answer="7", metadata={})]
        t0 = time.monotonic()
        rewards = group.score(prompts, completions)
        assert time.monotonic() - t0 < 1.5 + 6.0  # 4 hung calls per worker, timed out together
        assert all(r.failures[hangs].startswith("timeout:") for r in rewards)
        stub = SimpleNamespace(restarts=0)
        faults = Groups(rollouts=stub, trainer=stub, rewards=group).faults()
        assert faults["faults/reward_kills"] == 8 and faults["faults/reward_restarts"] == 0
    finally:
        group.stop()
