"""Keeping a run going when actors die: replacement engines and reward workers, and
where each actor runs."""

from __future__ import annotations

import os
import threading
import time

from rlvr.config import Config


def start_reward_worker(cfg: Config):
    """One reward worker actor (it loads the verifiers in its child process as it starts)."""
    import ray

    from rlvr.reward.pool import RewardWorker

    return ray.remote(num_cpus=cfg.reward.cpus_per_worker)(RewardWorker).remote(
        list(cfg.reward.verifiers), cfg.reward.timeout_s, cfg.reward.failure_score)


class Recovery:
    """Replaces a rollout engine or reward worker that dies mid-step, in place in the lists
    the loop uses, so the step completes: the new engine joins the weight-sync group and
    gets the current weights (or, with LoRA adapter sync, the current adapter) before its
    prompts are generated again; a dead worker's samples are scored again on another
    worker. Counted in `faults/*`. A trainer rank that dies is not recovered here: the run
    stops with an error naming it (resume from the last checkpoint with
    `checkpoint.resume=auto`)."""

    def __init__(self, cfg: Config, run_dir: str, model_path: str, colocate_pg, engines, trainers, rewarders):
        self.cfg, self.run_dir, self.model_path, self.colocate_pg = cfg, run_dir, model_path, colocate_pg
        self.engines, self.trainers, self.rewarders = engines, trainers, rewarders
        self.version = 0  # the weights the engines hold (set by the loop after each sync)
        self.lock = threading.Lock()  # a replacement's sync never overlaps the loop's own
        self.faults = {"faults/rollout_restarts": 0, "faults/reward_restarts": 0}
        self.on_replaced = lambda kind, handles: None  # the loop reports the new placement

    def engine(self, i: int, error: Exception) -> None:
        import ray

        from rlvr.rollout.actors import create_engines

        with self.lock:
            t0 = time.perf_counter()
            print(f"[rlvr] fault: engine {i} died ({_one_line(error)}); starting a replacement", flush=True)
            self.faults["faults/rollout_restarts"] += 1
            ray.kill(self.engines[i])
            [self.engines[i]] = create_engines(self.cfg.rollout, self.model_path, self.cfg.run.seed, self.cfg.model.dtype,
                                               colocate_pg=self.colocate_pg, indices=[i], lora=self.cfg.model.lora)
            from rlvr.driver import setup_weight_sync, sync_weights

            setup_weight_sync(self.trainers, self.engines, self.cfg, self.run_dir)
            if self.version:
                sync_weights(self.trainers, self.engines, self.version, self.cfg)
            self.on_replaced("engines", self.engines)
            print(f"[rlvr] fault: engine {i} replaced in {time.perf_counter() - t0:.1f} s", flush=True)

    def rewarder(self, i: int, error: Exception) -> int:
        """Replace worker i; returns the worker that should score its samples again."""
        import ray

        with self.lock:
            print(f"[rlvr] fault: reward worker {i} died ({_one_line(error)}); starting a replacement", flush=True)
            self.faults["faults/reward_restarts"] += 1
            ray.kill(self.rewarders[i])
            self.rewarders[i] = start_reward_worker(self.cfg)
            self.on_replaced("rewarders", self.rewarders)
            return (i + 1) % len(self.rewarders)


def _one_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def actor_places(handles) -> list[dict]:
    """The Ray node id and process id of each actor (shown in status.json as `placement`)."""
    import ray

    def where(self) -> dict:
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    return ray.get([h.__ray_call__.remote(where) for h in handles])
