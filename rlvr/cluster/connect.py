"""Connect to Ray: join a running cluster, or start a private local one.

The driver joins a cluster when `cluster.address` is set or `RAY_ADDRESS` is in
the environment (that is how `ray job submit` runs it); otherwise it starts a
private cluster (`address="local"`), sized in *logical* CPUs to exactly what the
recipe asks for (`rlvr.config.cluster.logical_cpus_needed`). Logical CPUs only decide
placement; each process caps its own threads (`trainer.num_threads`,
`rollout.num_threads`) so real cores are not oversubscribed.
"""

from __future__ import annotations

import json
import os


def connect(cluster, cpus_needed: int, resources_needed: dict[str, float], verbose: bool = True) -> bool:
    """ray.init for this run (`cluster` is the recipe's section); returns True when we started
    (and so must stop) the cluster. Not `verbose`: Ray's own INFO/WARNING lines and the
    workers' output stay off the console (`rlvr.cluster.logs`)."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    quiet = {} if verbose else {"log_to_driver": False, "logging_level": logging.ERROR}
    address = cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **{"log_to_driver": True, **quiet})
        return False
    kwargs = {}
    if cluster.temp_dir:
        kwargs["_temp_dir"] = os.path.abspath(cluster.temp_dir)
    ray.init(address="local", num_cpus=cluster.num_cpus or cpus_needed, resources=resources_needed,
             include_dashboard=False, **kwargs, **quiet)
    return True


def job_submission_id() -> str | None:
    """The Ray job id when this driver was started by `ray job submit` (Ray hands the
    entrypoint its job config, whose metadata holds the submission id), else None."""
    try:
        return json.loads(os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"])["metadata"]["job_submission_id"]
    except (KeyError, TypeError, ValueError):
        return None
