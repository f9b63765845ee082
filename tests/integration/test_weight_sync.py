"""Weight sync through the driver's own functions, with real trainer ranks and engines:
every `sync.method` delivers the trained weights to a vLLM and a transformers engine, and
`sync.verify`'s probe catches an engine whose weights were corrupted after a sync."""

from __future__ import annotations

import pytest
import torch

from rlvr.config import Config, RolloutConfig, TrainerConfig
from rlvr.data import Prompt

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def stack(ray_cluster, random_model_dir):
    """Two fsdp2 ranks, one vLLM engine and one transformers engine on the tiny random model."""
    import ray

    from rlvr.rollout.actors import create_engines
    from rlvr.trainer.group import create_trainers
    from ray.util.placement_group import remove_placement_group

    cfg = Config()
    cfg.trainer = TrainerConfig(backend="fsdp2", num_workers=2, total_steps=5, lr=1e-2, cpus_per_worker=0.5)
    engines = []
    for name in ("vllm", "hf"):
        engines += create_engines(RolloutConfig(engine=name, num_engines=1, cpus_per_engine=0.5, num_threads=1),
                                  random_model_dir, seed=0, dtype="float32")
    trainers, pg = create_trainers(cfg.trainer, cfg.algorithm, random_model_dir, seed=0)
    yield cfg, trainers, engines
    for actor in trainers + engines:
        ray.kill(actor)
    remove_placement_group(pg)


def probe_prompts(n: int = 4) -> list[Prompt]:
    return [Prompt(text="", token_ids=[5 + i, 17, 42 + i, 9], answer="") for i in range(n)]


def train_once(cfg, trainers, seed: int) -> None:
    """One real update, so the trainer's weights differ from the engines'."""
    from rlvr.driver import train_step
    from rlvr.trainer.batch import TrainSample

    g = torch.Generator().manual_seed(seed)
    samples = [TrainSample([3, 4, 5], torch.randint(10, 200, (6,), generator=g).tolist(), float(a), [-1.0] * 6)
               for a in (1.0, -1.0, 0.5, -0.5)]
    stats = train_step(trainers, samples, cfg)
    assert stats["grad_norm"] > 0


@pytest.mark.parametrize("method", ["broadcast", "ipc", "disk"])
def test_each_method_delivers_the_trained_weights(stack, tmp_path, method):
    from rlvr.driver import setup_weight_sync, sync_weights, verify_weights
    from rlvr.weight_sync import WeightSyncError

    cfg, trainers, engines = stack
    cfg.sync.method, cfg.sync.bucket_mb, cfg.sync.verify_tol = method, 0.25, 1e-3  # several buckets
    setup_weight_sync(trainers, engines, cfg, str(tmp_path))
    probe = probe_prompts()
    train_once(cfg, trainers, seed=len(method))
    with pytest.raises(WeightSyncError, match="not running the trainer's weights"):  # not synced yet
        verify_weights(trainers, engines, probe, 1, cfg)
    stats = sync_weights(trainers, engines, 1, cfg)
    assert stats["sync/buckets"] > 1 and stats["sync/bytes"] > 1_000_000
    assert verify_weights(trainers, engines, probe, 1, cfg) < 1e-3
    if method == "disk":  # the folder holds only the newest version
        assert [p.name for p in (tmp_path / "sync").iterdir() if p.is_dir()] == ["v1"]


def test_verify_catches_weights_corrupted_after_a_sync(stack, tmp_path):
    import ray

    from rlvr.driver import setup_weight_sync, sync_weights, verify_weights
    from rlvr.weight_sync import WeightSyncError

    cfg, trainers, engines = stack
    cfg.sync.method = "broadcast"
    setup_weight_sync(trainers, engines, cfg, str(tmp_path))
    train_once(cfg, trainers, seed=11)
    sync_weights(trainers, engines, 2, cfg)
    assert verify_weights(trainers, engines, probe_prompts(), 2, cfg) < 1e-3
    state = ray.get([t.full_state_dict.remote() for t in trainers])[0]
    name = next(k for k in state if k.endswith("mlp.down_proj.weight"))
    state[name] = state[name] * 1.5  # a silently wrong weight in the vLLM engine only
    ray.get(engines[0].update_weights.remote(state, 2))
    with pytest.raises(WeightSyncError, match="engine 0 is not running the trainer's weights"):
        verify_weights(trainers, engines, probe_prompts(), 2, cfg)
    sync_weights(trainers, engines, 3, cfg)  # the next sync repairs it
    assert verify_weights(trainers, engines, probe_prompts(), 3, cfg) < 1e-3
