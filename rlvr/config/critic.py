"""The `critic` section: the value model PPO trains beside the policy (`algorithm.advantage: gae`,
`algorithm.preset: ppo`); unused otherwise.

The critic is the policy's architecture with a scalar head (`rlvr.trainer.critic`), trained by its
own trainer group with the trainer's backend and rank count (FSDP2 or DeepSpeed ZeRO), placed in
the trainer ranks' bundles (so it sits with the trainer in `side` and in `colocate`), and saved
and restored with the run's checkpoints (`<checkpoint>/critic/`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from rlvr.config.checks import require


@dataclass
class CriticConfig:
    path: Optional[str] = None  # null: initialised from the policy's starting model (a new head, zeroed)
    lr: float = 1e-3
    lr_warmup_steps: int = 0  # the critic optimizer's linear LR warm-up, in updates
    # RL steps at the start in which only the critic trains (the policy is frozen and not synced)
    warmup_steps: int = 0
    value_clip: Optional[float] = 0.2  # PPO2's clip of V - V_old; null: plain squared error
    updates_per_step: int = 1  # critic optimizer updates per RL step (mini-batches)
    micro_batch_size: Optional[int] = None  # null: trainer.micro_batch_size
    cpus_per_worker: float = 0.25  # added to each trainer rank's bundle
    gpus_per_worker: float = 0.0

    def check(self) -> None:
        require(self.lr > 0, "critic.lr", "must be > 0")
        require(self.lr_warmup_steps >= 0, "critic.lr_warmup_steps", "must be >= 0")
        require(self.warmup_steps >= 0, "critic.warmup_steps", "must be >= 0")
        require(self.value_clip is None or self.value_clip > 0, "critic.value_clip", "must be > 0 (or null)")
        require(self.updates_per_step >= 1, "critic.updates_per_step", "must be >= 1")
        require(self.micro_batch_size is None or self.micro_batch_size >= 1, "critic.micro_batch_size", "must be >= 1")
        require(self.cpus_per_worker >= 0 and self.gpus_per_worker >= 0, "critic.cpus_per_worker",
                "resources must be >= 0")

    def trainer_config(self, trainer):
        """The critic ranks' `TrainerConfig`: the trainer's backend, ranks, precision, threads and
        prompt sharing, with the critic's optimisation and resources (no fused log-probs or
        compiling: a value head has no LM head)."""
        return replace(trainer, lr=self.lr, warmup_steps=self.lr_warmup_steps, lr_schedule="constant",
                       updates_per_step=self.updates_per_step,
                       micro_batch_size=self.micro_batch_size or trainer.micro_batch_size,
                       cpus_per_worker=self.cpus_per_worker, gpus_per_worker=self.gpus_per_worker,
                       fused_logprobs=False, compile="off")


def critic_on(algorithm) -> bool:
    """Whether the run trains a critic (`algorithm.advantage` is a critic's: gae)."""
    return algorithm.advantage == "gae"


def critic_ranks(critic: CriticConfig, algorithm, trainer):
    """The critic ranks' `TrainerConfig` when the run trains a critic, else None."""
    return critic.trainer_config(trainer) if critic_on(algorithm) else None
