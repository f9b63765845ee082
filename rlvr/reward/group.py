"""The reward workers as one group: score samples split over the workers, replace a worker
that dies mid-batch (its share is scored again on another worker), and stop a run whose
verifier fails on too much of a batch.

The training verifiers are one `RewardGroup`; an eval set with verifiers of its own gets
a second one (one worker, 0 logical CPUs: it only works while the rest waits for the eval).
"""

from __future__ import annotations

import threading
import time

from rlvr.cluster.remote import RemoteCallError, actor_died, one_line, places, wait_all
from rlvr.config.reward import verifier_keys
from rlvr.types import Completion, RewardInput, SampleReward


class RewardFailureError(RuntimeError):
    """A verifier failed on too much of a batch: a broken plugin must not train silently."""


class RewardGroup:
    """`verifiers`: `reward.verifiers`-style items; `cfg`: the `reward` section (timeouts,
    failure score, workers and their CPUs unless given here)."""

    def __init__(self, verifiers: list[dict], cfg, *, num_workers: int | None = None,
                 cpus_per_worker: float | None = None, timeout_s: float = 1800.0):
        self.verifiers, self.cfg, self.timeout_s = [dict(v) for v in verifiers], cfg, timeout_s
        self.cpus = cfg.cpus_per_worker if cpus_per_worker is None else cpus_per_worker
        self.keys = verifier_keys(self.verifiers)
        self.restarts = 0
        self._lock = threading.Lock()  # a replacement (rollouts run in a background thread, too) at a time
        self._workers = [self._start() for _ in range(num_workers or cfg.num_workers)]
        wait_all([w.ping.remote() for w in self._workers], "starting the reward workers", timeout_s)

    def _start(self):
        import ray

        from rlvr.reward.worker import RewardWorker

        return ray.remote(num_cpus=self.cpus)(RewardWorker).remote(self.verifiers, self.cfg.timeout_s,
                                                                    self.cfg.failure_score)

    @property
    def handles(self) -> list:
        return list(self._workers)

    def submit(self, prompts, completions: list[Completion]) -> list:
        """Start scoring `completions` (of `prompts`), split over the workers; returns, in order,
        one `(worker index, inputs, result ref)` per non-empty share, for `collect`."""
        from rlvr.rollout.group import split_evenly

        inputs = [RewardInput(prompts[c.prompt_index].text, c.text, prompts[c.prompt_index].answer,
                              prompts[c.prompt_index].metadata) for c in completions]
        return [(i, share, self._workers[i].score.remote(share))
                for i, share in enumerate(split_evenly(inputs, len(self._workers))) if share]

    def collect(self, pending: list, timeout_s: float | None = None) -> list[SampleReward]:
        """The rewards of what `submit` started, in order. A worker that died is replaced and
        its share scored again on another worker (`faults/reward_restarts`)."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        rewards: list[SampleReward] = []
        for worker, share, ref in pending:
            try:
                rewards += wait_all([ref], f"score on reward worker {worker}", max(1.0, deadline - time.monotonic()))[0]
            except RemoteCallError as e:
                if not actor_died(e):
                    raise
                retry = self.replace(worker, e)
                rewards += wait_all([self._workers[retry].score.remote(share)], f"score on reward worker {retry}",
                                    self.timeout_s)[0]
        return rewards

    def score(self, prompts, completions: list[Completion]) -> list[SampleReward]:
        return self.collect(self.submit(prompts, completions))

    def replace(self, i: int, error: BaseException) -> int:
        """Start a new worker in place of worker i; returns the worker to score its share again."""
        import ray

        with self._lock:
            print(f"[rlvr] fault: reward worker {i} died ({one_line(error)}); starting a replacement", flush=True)
            self.restarts += 1
            ray.kill(self._workers[i])
            self._workers[i] = self._start()
            return (i + 1) % len(self._workers)

    def places(self) -> list[dict]:
        return places(self._workers)

    def stop(self) -> None:
        import ray

        for w in self._workers:
            try:
                ray.get(w.shutdown.remote(), timeout=30)
            except Exception:
                pass
            ray.kill(w)


def check_failures(rewards: list[SampleReward], completions: list[Completion], max_fraction: float) -> None:
    """Print one example per failing verifier; stop the run past `max_fraction`
    (`reward.max_failure_fraction`) of the batch."""
    from rlvr.reward.worker import failure_report

    for key, (count, example) in failure_report(rewards, [c.text for c in completions]).items():
        fraction = count / max(1, len(rewards))
        print(f"[rlvr] reward: verifier {key!r} failed on {count}/{len(rewards)} samples, e.g. {example}", flush=True)
        if fraction > max_fraction:
            raise RewardFailureError(
                f"verifier {key!r} failed on {fraction:.0%} of the batch (> reward.max_failure_fraction="
                f"{max_fraction}); e.g. {example}")
