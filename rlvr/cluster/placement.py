"""Where the actors go: one placement group for the trainer ranks, engines beside or inside it.

`cluster.placement`:

* `side`: bundle i = trainer rank i's resources (`trainer.cpus_per_worker`,
  `trainer.gpus_per_worker`, `trainer.resources`), packed; engines are scheduled
  on their own resources (`rollout.cpus_per_engine`, `rollout.gpus_per_engine`,
  `rollout.resources`), so on GPUs vLLM may own whole devices.
* `colocate`: bundle i also holds engine i's resources, and engine i is placed in
  it: engine and trainer rank share the bundle's CPUs and GPU and take turns
  (the engine sleeps while the trainer steps, on GPUs; see `rlvr.rollout.group`). On a
  GPU give each a fraction, e.g. `trainer.gpus_per_worker=0.5
  rollout.gpus_per_engine=0.5` on a 1-GPU bundle.

`trainer.resources` / `rollout.resources` are custom Ray resources (say
`{node_a: 0.01}`) to pin ranks or engines to nodes that advertise them.
"""

from __future__ import annotations


def bundles(trainer, rollout=None, colocate: bool = False, judge=None, critic=None) -> list[dict[str, float]]:
    """The placement group's bundles, one per trainer rank (`trainer`, `rollout`: recipe sections;
    `judge`: `reward.judge` when the run starts one: placed `colocate`, engine i joins bundle i;
    `critic`: the critic ranks' TrainerConfig, `rlvr.config.critic.critic_ranks`, whose rank i
    shares bundle i with trainer rank i).

    >>> from rlvr.config import RolloutConfig, TrainerConfig
    >>> t, r = TrainerConfig(num_workers=2), RolloutConfig(num_engines=1, cpus_per_engine=0.5)
    >>> bundles(t, r)
    [{'CPU': 1.0}, {'CPU': 1.0}]
    >>> bundles(t, r, colocate=True)
    [{'CPU': 1.5}, {'CPU': 1.0}]
    """
    out = []
    for i in range(trainer.num_workers):
        bundle = {"CPU": trainer.cpus_per_worker, "GPU": trainer.gpus_per_worker, **trainer.resources}
        if critic is not None:
            bundle["CPU"] += critic.cpus_per_worker
            bundle["GPU"] += critic.gpus_per_worker
        if colocate and i < rollout.num_engines:
            bundle["CPU"] += rollout.cpus_per_engine
            bundle["GPU"] += rollout.gpus_per_engine
            for key, value in rollout.resources.items():
                bundle[key] = bundle.get(key, 0.0) + value
        if judge is not None and judge.placement == "colocate" and i < judge.num_engines:
            bundle["CPU"] += judge.cpus_per_engine
            bundle["GPU"] += judge.gpus_per_engine
        out.append({k: float(v) for k, v in bundle.items() if v})
    return out


def create_placement_group(wanted: list[dict[str, float]], timeout_s: float = 600.0, report_every_s: float = 30.0):
    """Reserve the bundles (all or nothing). While Ray cannot place them, print what it waits for
    every `report_every_s`; after `timeout_s` fail with one line naming the bundles and what the
    cluster has free."""
    import time

    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from rlvr.cluster.fit import ClusterFitError

    pg, t0 = placement_group(wanted, strategy="PACK"), time.monotonic()
    ready, reported = pg.ready(), time.monotonic()
    try:
        while True:
            # waits of at most a second: Python runs signal handlers (SIGTERM, Ctrl-C) between them
            if ray.wait([ready], timeout=min(1.0, max(0.0, timeout_s - (time.monotonic() - t0))))[0]:
                return pg
            if time.monotonic() - reported < report_every_s and time.monotonic() - t0 < timeout_s:
                continue
            reported = time.monotonic()
            free = {k: round(v, 2) for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
            left = timeout_s - (time.monotonic() - t0)
            if left <= 0:
                raise ClusterFitError(f"Ray could not reserve {wanted} for the trainer ranks within {timeout_s:.0f} s "
                                      f"(cluster.startup_timeout_s; free now: {free})")
            print(f"[rlvr] waiting for Ray to place the trainer ranks' bundles {wanted} (free now: {free}; "
                  f"giving up in {left:.0f} s)", flush=True)
    except BaseException:
        remove_placement_group(pg)  # nothing half-reserved stays behind (a stop, a timeout)
        raise


def in_bundle(pg, index: int) -> dict:
    """Actor options that place it in bundle `index` of `pg`."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)}
