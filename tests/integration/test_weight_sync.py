"""Weight sync through the run's own groups, with real trainer ranks and engines: every
`sync.method` delivers the trained weights to a vLLM and a transformers engine, and
`sync.verify`'s probe catches an engine whose weights were corrupted after a sync."""

from __future__ import annotations

import pytest
import torch

from rlvr.config import Config, RolloutConfig, TrainerConfig
from tests.helpers.stack import probe_prompts

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def stack(ray_cluster, random_model_dir):
    """Two fsdp2 ranks, and a rollout group of one vLLM engine and one of one transformers engine,
    on the tiny random model."""
    from rlvr.rollout.group import RolloutGroup
    from rlvr.trainer.group import TrainerGroup

    cfg = Config()
    cfg.trainer = TrainerConfig(backend="fsdp2", num_workers=2, total_steps=5, lr=1e-2, cpus_per_worker=0.5)
    groups = [RolloutGroup(RolloutConfig(engine=name, num_engines=1, cpus_per_engine=0.5, num_threads=1),
                           random_model_dir, seed=0, dtype="float32") for name in ("vllm", "hf")]
    trainer = TrainerGroup(cfg.trainer, cfg.algorithm, random_model_dir, seed=0)
    yield cfg, trainer, groups
    for group in [trainer, *groups]:
        group.stop()


def weight_sync(cfg, trainer, rollouts, folder):
    from rlvr.sync.group import WeightSync

    sync = WeightSync(cfg.sync, trainer, rollouts, str(folder))
    sync.setup()
    return sync


def train_once(trainer, seed: int) -> None:
    """One real update, so the trainer's weights differ from the engines'."""
    from rlvr.types import TrainSample

    g = torch.Generator().manual_seed(seed)
    samples = [TrainSample([3, 4, 5], torch.randint(10, 200, (6,), generator=g).tolist(), float(a), [-1.0] * 6)
               for a in (1.0, -1.0, 0.5, -0.5)]
    stats = trainer.train(samples)
    assert stats["grad_norm"] > 0


@pytest.mark.parametrize("method", ["broadcast", "ipc", "disk"])
def test_each_method_delivers_the_trained_weights(stack, tmp_path, method):
    from rlvr.sync.tensors import WeightSyncError

    cfg, trainer, groups = stack
    cfg.sync.method, cfg.sync.bucket_mb, cfg.sync.verify_tol = method, 0.25, 1e-3  # several buckets
    probe = probe_prompts()
    train_once(trainer, seed=len(method))
    for rollouts in groups:  # the vLLM engine, then the transformers engine
        sync = weight_sync(cfg, trainer, rollouts, tmp_path / "sync")
        with pytest.raises(WeightSyncError, match="not running the trainer's weights"):  # not synced yet
            sync.verify(probe)
        stats = sync.push(1)
        assert stats["sync/buckets"] > 1 and stats["sync/bytes"] > 1_000_000
        assert sync.verify(probe) < 1e-3
        if method == "disk":  # the folder holds only the newest version
            assert [p.name for p in (tmp_path / "sync").iterdir() if p.is_dir()] == ["v1"]


def test_verify_catches_weights_corrupted_after_a_sync(stack, tmp_path):
    import ray

    from rlvr.sync.tensors import WeightSyncError

    cfg, trainer, groups = stack
    cfg.sync.method = "broadcast"
    sync = weight_sync(cfg, trainer, groups[0], tmp_path / "sync")
    train_once(trainer, seed=11)
    sync.push(2)
    assert sync.verify(probe_prompts()) < 1e-3
    state = trainer.full_state_dict()
    name = next(k for k in state if k.endswith("mlp.down_proj.weight"))
    state[name] = state[name] * 1.5  # a silently wrong weight in the vLLM engine only
    ray.get(groups[0].handles[0].update_weights.remote(state, 2))
    with pytest.raises(WeightSyncError, match="engine 0 is not running the trainer's weights"):
        sync.verify(probe_prompts())
    sync.push(3)  # the next sync repairs it
    assert sync.verify(probe_prompts()) < 1e-3
