"""Run by test_multinode.py in its own process: a 2-node Ray cluster on this machine
(`ray.cluster_utils.Cluster`), trainer ranks pinned to one node and the engine to the
other through custom resources, 3 training steps with broadcast sync verified every step.

    python -m tests.integration.multinode_run OUT_DIR CACHE_DIR
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from rlvr.cluster.env import free_port


def node_args(resources: dict) -> dict:
    """Each node gets its own agent ports: other Ray clusters may run on this machine."""
    return {"num_cpus": 4, "resources": resources, "include_dashboard": False,
            "dashboard_agent_listen_port": free_port(), "metrics_agent_port": free_port(),
            "metrics_export_port": free_port(), "runtime_env_agent_port": free_port(),
            "object_store_memory": 200 * 2**20}


def main(out_dir: str, cache_dir: str) -> None:
    from ray.cluster_utils import Cluster

    from rlvr.config import load_recipe
    from rlvr.loop.train import train

    os.environ.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="rlvr-2node-", dir="/tmp")
    cluster = Cluster(initialize_head=True, head_node_args={**node_args({"trainer_node": 100}), "temp_dir": temp_dir})
    cluster.add_node(**node_args({"engine_node": 100}))
    cluster.wait_for_nodes()
    recipe = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "tiny-cpu.yaml")
    cfg = load_recipe(recipe, [
        f"cluster.address={cluster.address}", f"run.output_dir={out_dir}", "run.name=two-nodes",
        f"model.cache_dir={cache_dir}", "logging.progress=false", "trainer.total_steps=3", "eval.every=0",
        "eval.num_prompts=16", "checkpoint.save_final=false", "sync.method=broadcast", "sync.verify=always",
        "trainer.resources={trainer_node: 1}", "rollout.resources={engine_node: 1}"])
    try:
        train(cfg)
        import ray

        nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    with open(os.path.join(out_dir, "nodes.json"), "w") as f:
        json.dump({node: sorted(k for k in res if k.endswith("_node")) for node, res in nodes.items()}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
