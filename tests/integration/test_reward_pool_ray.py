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
