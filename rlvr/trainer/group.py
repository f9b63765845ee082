"""Create the trainer ranks: one Ray actor per rank, packed in a placement group."""

from __future__ import annotations

import socket

from rlvr.config import AlgorithmConfig, TrainerConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_trainers(cfg: TrainerConfig, algo: AlgorithmConfig, model_path: str, seed: int,
                    runtime_env: dict | None = None, temperature: float = 1.0, norm_tokens: int | None = None):
    """Start `cfg.num_workers` TrainerWorker actors forming one process group; wait until ready."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from rlvr.trainer.worker import TrainerWorker

    bundle = {"CPU": cfg.cpus_per_worker}
    if cfg.gpus_per_worker:
        bundle["GPU"] = cfg.gpus_per_worker
    pg = placement_group([dict(bundle) for _ in range(cfg.num_workers)], strategy="PACK")
    ray.get(pg.ready(), timeout=600)
    actor_cls = ray.remote(TrainerWorker)
    workers = [
        actor_cls.options(
            num_cpus=cfg.cpus_per_worker,
            num_gpus=cfg.gpus_per_worker,
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank),
            runtime_env=runtime_env,
        ).remote(rank, cfg.num_workers, cfg, algo, seed, temperature, norm_tokens)
        for rank in range(cfg.num_workers)
    ]
    addr, port = ray.get(workers[0].rendezvous_address.remote())
    ray.get([w.setup.remote(addr, port, model_path) for w in workers])
    return workers, pg
