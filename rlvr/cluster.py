"""Connect to Ray: join a running cluster, or start a private local one.

The driver joins a cluster when `cluster.address` is set or `RAY_ADDRESS` is in
the environment (that is how `ray job submit` runs it); otherwise it starts a
private cluster (`address="local"`), sized in *logical* CPUs to exactly what the
recipe asks for. Logical CPUs only decide placement; each process caps its own
threads (`trainer.num_threads`, `rollout.num_threads`) so real cores are not
oversubscribed.
"""

from __future__ import annotations

import math
import os

from rlvr.config import Config


def logical_cpus_needed(cfg: Config) -> int:
    need = (cfg.trainer.num_workers * cfg.trainer.cpus_per_worker
            + cfg.rollout.num_engines * cfg.rollout.cpus_per_engine
            + cfg.reward.num_workers * cfg.reward.cpus_per_worker)
    return max(1, math.ceil(need))


def custom_resources_needed(cfg: Config) -> dict[str, float]:
    """`trainer.resources` and `rollout.resources` summed over ranks and engines (a private
    local cluster advertises exactly these, so node-pinned recipes also run on a laptop)."""
    out: dict[str, float] = {}
    for resources, count in ((cfg.trainer.resources, cfg.trainer.num_workers),
                             (cfg.rollout.resources, cfg.rollout.num_engines)):
        for key, value in resources.items():
            out[key] = out.get(key, 0.0) + value * count
    return out


def connect(cfg: Config) -> bool:
    """ray.init for this run; returns True when we started (and so must stop) the cluster."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    kwargs = {}
    if cfg.cluster.temp_dir:
        kwargs["_temp_dir"] = os.path.abspath(cfg.cluster.temp_dir)
    ray.init(address="local", num_cpus=cfg.cluster.num_cpus or logical_cpus_needed(cfg),
             resources=custom_resources_needed(cfg), include_dashboard=False, **kwargs)
    return True


def runtime_env_for_actors(cache_dir: str) -> dict:
    """Environment every actor needs (JIT-compiled DeepSpeed ops are cached, not rebuilt)."""
    return {"env_vars": {
        "TORCH_EXTENSIONS_DIR": os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), "torch_extensions"),
        "TOKENIZERS_PARALLELISM": "false",
    }}


def job_submission_id() -> str | None:
    """The Ray job id when this driver was started by `ray job submit` (Ray hands the
    entrypoint its job config, whose metadata holds the submission id), else None."""
    import json

    try:
        return json.loads(os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"])["metadata"]["job_submission_id"]
    except (KeyError, TypeError, ValueError):
        return None
