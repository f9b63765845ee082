"""The reward workers as one group: score samples split over the workers, replace a worker that
dies mid-batch (its share is scored again on another worker; `rlvr.cluster.workers`), and
stop a run whose verifier fails on too much of a batch.

The training verifiers are one `RewardGroup`; an eval set with verifiers of its own gets
a second one (one worker, 0 logical CPUs: it only works while the rest waits for the eval).
"""

from __future__ import annotations

from rlvr.cluster.workers import WorkerGroup
from rlvr.config.reward import verifier_keys
from rlvr.types import Completion, RewardInput, SampleReward


class RewardFailureError(RuntimeError):
    """A verifier failed on too much of a batch: a broken plugin must not train silently."""


class RewardGroup:
    """`verifiers`: `reward.verifiers`-style items; `cfg`: the `reward` section (timeouts,
    failure score, workers and their CPUs unless given here)."""

    def __init__(self, verifiers: list[dict], cfg, *, num_workers: int | None = None,
                 cpus_per_worker: float | None = None, timeout_s: float = 1800.0, wait: bool = True):
        from rlvr.reward.worker import RewardWorker

        verifiers = [dict(v) for v in verifiers]
        self.keys = verifier_keys(verifiers)
        self.kills = 0  # verifier processes killed (hung past the deadline) or found dead, over the run
        args = (verifiers, cfg.timeout_s, cfg.failure_score, cfg.procs_per_worker, cfg.max_procs_per_worker,
                list(cfg.env_passthrough))
        self.workers = WorkerGroup(RewardWorker, args,
                                   num_workers or cfg.num_workers,
                                   cfg.cpus_per_worker if cpus_per_worker is None else cpus_per_worker,
                                   label="reward worker", timeout_s=timeout_s, gpus=cfg.gpus_per_worker, wait=wait)

    def wait_started(self) -> None:
        self.workers.wait_started()

    @property
    def handles(self) -> list:
        return self.workers.handles

    @property
    def restarts(self) -> int:
        """Reward workers (Ray actors) replaced; `kills` counts their verifier processes killed."""
        return self.workers.restarts

    def submit(self, prompts, completions: list[Completion]) -> list:
        """Start scoring `completions` (of `prompts`); what `collect` takes."""
        return self.workers.submit("score", [RewardInput.of(prompts[c.prompt_index], c) for c in completions])

    def collect(self, pending: list, timeout_s: float | None = None) -> list[SampleReward]:
        """The rewards of what `submit` started, in order (a dead worker's share is scored again)."""
        rewards = self.workers.collect(pending, "score", timeout_s)
        self.kills += sum(r.kills for r in rewards)
        return rewards

    def score(self, prompts, completions: list[Completion]) -> list[SampleReward]:
        return self.collect(self.submit(prompts, completions))

    def replace(self, i: int, error: BaseException) -> int:
        return self.workers.replace(i, error)

    def places(self) -> list[dict]:
        return self.workers.places()

    def stop(self) -> None:
        self.workers.stop()


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
