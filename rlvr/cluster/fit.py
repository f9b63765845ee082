"""Does the recipe fit the Ray cluster? Checked once `ray.init` has joined it, before any actor
starts, so a cluster too small for the recipe fails at once with one line instead of leaving
the driver waiting forever for actors Ray cannot place.

`needs` and `shortfalls` are pure (tested without Ray); `check_fits` asks Ray for the cluster's
totals. A cluster that grows by itself (an autoscaler) sets `cluster.wait_for_resources: true`:
then a shortfall is printed and the placement group waits for it, up to
`cluster.startup_timeout_s` (`rlvr.cluster.placement.create_placement_group`).
"""

from __future__ import annotations

from rlvr.config.cluster import custom_resources_needed, logical_cpus_needed

# the recipe keys that decide each resource, for the error message
KEYS = {
    "CPU": "trainer.num_workers x trainer.cpus_per_worker + rollout.num_engines x rollout.cpus_per_engine + "
           "reward.num_workers x reward.cpus_per_worker + reward.judge.num_engines x reward.judge.cpus_per_engine "
           "(+ trainer.num_workers x critic.cpus_per_worker with a critic)",
    "GPU": "trainer.num_workers x trainer.gpus_per_worker + rollout.num_engines x rollout.gpus_per_engine + "
           "reward.num_workers x reward.gpus_per_worker + reward.judge.num_engines x reward.judge.gpus_per_engine "
           "(+ trainer.num_workers x critic.gpus_per_worker with a critic)",
}


class ClusterFitError(RuntimeError):
    """The cluster cannot hold the recipe's actors (a one-line message naming what is missing)."""


def needs(cfg) -> dict[str, float]:
    """Ray resources the run's actors ask for, summed (`cfg`: the whole recipe).

    >>> from rlvr.config import Config
    >>> needs(Config())
    {'CPU': 4}
    """
    from rlvr.config.critic import critic_ranks

    t, r = cfg.trainer, cfg.rollout
    critic = critic_ranks(cfg.critic, cfg.algorithm, t)
    out: dict[str, float] = {"CPU": logical_cpus_needed(t, r, cfg.reward, critic)}
    j = cfg.reward.judge
    gpus = t.num_workers * t.gpus_per_worker + r.num_engines * r.gpus_per_engine \
        + (j.num_engines * j.gpus_per_engine if j.model else 0) + cfg.reward.num_workers * cfg.reward.gpus_per_worker
    gpus += critic.num_workers * critic.gpus_per_worker if critic is not None else 0
    if gpus:
        out["GPU"] = gpus
    return {**out, **custom_resources_needed(t, r)}


def shortfalls(need: dict[str, float], have: dict[str, float]) -> list[str]:
    """What `have` (a cluster's total resources) lacks for `need`, one phrase per resource.

    >>> shortfalls({"CPU": 4, "GPU": 1}, {"CPU": 1.0, "memory": 1e9})
    ['4 CPU (the cluster has 1)', '1 GPU (the cluster has 0)']
    >>> shortfalls({"CPU": 4}, {"CPU": 8.0})
    []
    """
    return [f"{_num(amount)} {name} (the cluster has {_num(have.get(name, 0.0))})"
            for name, amount in need.items() if have.get(name, 0.0) + 1e-9 < amount]


def fit_message(need: dict[str, float], have: dict[str, float]) -> str:
    """One line: what is missing and the recipe keys that ask for it."""
    missing = shortfalls(need, have)
    keys = "; ".join(f"{name}: {KEYS.get(name, 'trainer.resources / rollout.resources')}"
                     for name in need if have.get(name, 0.0) + 1e-9 < need[name])
    hint = f" or start Ray with more (`ray start --head --num-cpus {_num(need['CPU'])}`)" if "CPU" in keys else ""
    return (f"the Ray cluster cannot hold this recipe's actors: they need {', '.join(missing)}. "
            f"Lower the recipe keys ({keys}){hint}, or set cluster.wait_for_resources=true if the cluster autoscales")


def check_fits(cfg) -> None:
    """Raise ClusterFitError when the joined cluster's totals are short (print the shortfall and
    go on when `cluster.wait_for_resources`)."""
    import ray

    need, have = needs(cfg), ray.cluster_resources()
    if not shortfalls(need, have):
        return
    if not cfg.cluster.wait_for_resources:
        raise ClusterFitError(fit_message(need, have))
    print(f"[rlvr] waiting up to {cfg.cluster.startup_timeout_s:.0f} s for the cluster to grow: the recipe needs "
          f"{', '.join(shortfalls(need, have))}", flush=True)


def _num(x: float) -> str:
    return f"{x:g}"
