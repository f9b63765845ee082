"""The `cluster` section: which Ray cluster, where actors go, and how long a remote call may take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from rlvr.config.checks import require


@dataclass
class ClusterConfig:
    address: Optional[str] = None  # join this Ray cluster (RAY_ADDRESS also works)
    num_cpus: Optional[int] = None  # logical CPUs of a private local cluster (default: what the recipe asks)
    temp_dir: Optional[str] = None
    # side: engines on their own CPUs/GPUs. colocate: engine i shares trainer rank i's placement-group
    # bundle (and GPU); on GPUs the engine sleeps while the trainer steps.
    placement: Literal["side", "colocate"] = "side"
    rpc_timeout_s: float = 1800.0  # deadline of every blocking remote call; a hang becomes an error naming the call
    # a joined cluster too small for the recipe fails at once (one line naming what is missing), unless it
    # autoscales: then set wait_for_resources, and the run waits (printing what for every 30 s) up to
    # startup_timeout_s for the trainer ranks' resources
    wait_for_resources: bool = False
    startup_timeout_s: float = 600.0

    def check(self) -> None:
        require(self.rpc_timeout_s > 0, "cluster.rpc_timeout_s", "must be > 0")
        require(self.startup_timeout_s > 0, "cluster.startup_timeout_s", "must be > 0")


def logical_cpus_needed(trainer, rollout, reward, critic=None) -> int:
    """Logical CPUs the recipe's actors ask Ray for (what a private local cluster is sized to;
    `critic`: the critic ranks' TrainerConfig or None).

    >>> from rlvr.config import TrainerConfig, RolloutConfig, RewardConfig
    >>> logical_cpus_needed(TrainerConfig(), RolloutConfig(), RewardConfig())  # 2 x 1 + 1 x 1 + 1 x 0.5
    4
    """
    import math

    mt = rollout.multi_turn
    need = (trainer.num_workers * trainer.cpus_per_worker + rollout.num_engines * rollout.cpus_per_engine
            + reward.num_workers * reward.cpus_per_worker + (mt.tool_workers * mt.tool_cpus_per_worker if mt.enabled else 0)
            + (reward.judge.num_engines * reward.judge.cpus_per_engine if reward.judge.model else 0)
            + (critic.num_workers * critic.cpus_per_worker if critic is not None else 0))
    return max(1, math.ceil(need))


def custom_resources_needed(trainer, rollout) -> dict[str, float]:
    """`trainer.resources` and `rollout.resources` summed over ranks and engines (a private
    local cluster advertises exactly these, so node-pinned recipes also run on a laptop)."""
    out: dict[str, float] = {}
    for resources, count in ((trainer.resources, trainer.num_workers), (rollout.resources, rollout.num_engines)):
        for key, value in resources.items():
            out[key] = out.get(key, 0.0) + value * count
    return out
