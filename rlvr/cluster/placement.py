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


def bundles(trainer, rollout=None, colocate: bool = False) -> list[dict[str, float]]:
    """The placement group's bundles, one per trainer rank (`trainer`, `rollout`: recipe sections).

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
        if colocate and i < rollout.num_engines:
            bundle["CPU"] += rollout.cpus_per_engine
            bundle["GPU"] += rollout.gpus_per_engine
            for key, value in rollout.resources.items():
                bundle[key] = bundle.get(key, 0.0) + value
        out.append({k: float(v) for k, v in bundle.items() if v})
    return out


def create_placement_group(wanted: list[dict[str, float]], timeout_s: float = 600.0):
    """Reserve the bundles (all or nothing); fails with the bundles it asked for."""
    import ray
    from ray.util.placement_group import placement_group

    pg = placement_group(wanted, strategy="PACK")
    try:
        ray.get(pg.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise RuntimeError(f"Ray could not reserve {wanted} for the trainer ranks within {timeout_s:.0f} s "
                           f"(cluster resources: {ray.cluster_resources()})") from None
    return pg


def in_bundle(pg, index: int) -> dict:
    """Actor options that place it in bundle `index` of `pg`."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index)}
