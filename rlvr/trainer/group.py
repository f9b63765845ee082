"""Create the trainer ranks: one Ray actor per rank, packed in a placement group."""

from __future__ import annotations

import socket

from rlvr.config import AlgorithmConfig, LoRAConfig, TrainerConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))  # every interface, as the TCPStore server binds it
        return s.getsockname()[1]


def create_trainers(cfg: TrainerConfig, algo: AlgorithmConfig, model_path: str, seed: int, pg=None,
                    runtime_env: dict | None = None, temperature: float = 1.0, norm_tokens: int | None = None,
                    lora: LoRAConfig | None = None):
    """Start `cfg.num_workers` TrainerWorker actors, rank i in bundle i of the placement
    group `pg` (see `rlvr.placement`; made for these ranks alone when None), forming one
    process group; wait until ready. `lora` (`model.lora`) with rank > 0 trains LoRA adapters.
    Returns (workers, pg)."""
    import ray

    from rlvr.config import Config
    from rlvr.placement import create_placement_group, in_bundle
    from rlvr.rollout.actors import omp_env
    from rlvr.trainer.worker import TrainerWorker

    if pg is None:
        pg = create_placement_group(Config(trainer=cfg))

    actor_cls = ray.remote(TrainerWorker)
    runtime_env = dict(runtime_env or {})
    runtime_env["env_vars"] = {**omp_env(cfg.num_threads), **runtime_env.get("env_vars", {})}
    workers = [
        actor_cls.options(num_cpus=cfg.cpus_per_worker, num_gpus=cfg.gpus_per_worker, resources=dict(cfg.resources),
                          runtime_env=runtime_env, **in_bundle(pg, rank))
        .remote(rank, cfg.num_workers, cfg, algo, seed, temperature, norm_tokens, lora)
        for rank in range(cfg.num_workers)
    ]
    addr, port = ray.get(workers[0].rendezvous_address.remote())
    ray.get([w.setup.remote(addr, port, model_path) for w in workers])
    return workers, pg
