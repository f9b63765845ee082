"""GPU paths that cannot run on the CPU machines: marked `gpu`, skipped without CUDA.

They exercise the same trainer code on CUDA with NCCL (one rank), using only
documented torch/DeepSpeed APIs, and check what the CPU tests check: the loss
and gradient norm equal a plain single-process computation.
"""

from __future__ import annotations


import pytest

from rlvr.config import AlgorithmConfig, TrainerConfig

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("backend", ["fsdp2", "deepspeed"])
def test_trainer_rank_on_cuda_matches_reference(random_model_dir, backend, monkeypatch):
    import torch

    from rlvr.trainer.batch import num_micro_batches, shard_for_ranks
    from rlvr.trainer.group import free_port
    from rlvr.trainer.worker import TrainerWorker
    from tests.integration.test_trainer_group import make_samples, reference_loss_and_grad_norm

    samples = make_samples(9)
    worker = TrainerWorker(0, 1, TrainerConfig(backend=backend, num_workers=1, micro_batch_size=4), AlgorithmConfig(), 0)
    worker.setup("127.0.0.1", free_port(), random_model_dir)
    assert worker.device.type == "cuda"
    denominator = float(sum(len(s.completion_ids) for s in samples))
    out = worker.train_step(samples, denominator, num_micro_batches(shard_for_ranks(samples, 1), 4))
    ref_loss, ref_norm = reference_loss_and_grad_norm(random_model_dir, samples)
    assert out["loss"] == pytest.approx(ref_loss, rel=1e-3)
    assert out["grad_norm"] == pytest.approx(ref_norm, rel=1e-2)
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("backend", ["fsdp2", "deepspeed"])
def test_offload_keeps_training_state_in_cpu_memory(random_model_dir, backend):
    """`trainer.offload` (colocate on GPUs): the step still matches the reference, and the
    optimizer state lives in CPU memory (FSDP2 CPUOffloadPolicy / ZeRO optimizer offload)."""
    import torch

    from rlvr.trainer.batch import num_micro_batches, shard_for_ranks
    from rlvr.trainer.group import free_port
    from rlvr.trainer.worker import TrainerWorker
    from tests.integration.test_trainer_group import make_samples, reference_loss_and_grad_norm

    samples = make_samples(9)
    cfg = TrainerConfig(backend=backend, num_workers=1, micro_batch_size=4, offload=True)
    worker = TrainerWorker(0, 1, cfg, AlgorithmConfig(), 0)
    worker.setup("127.0.0.1", free_port(), random_model_dir)
    denominator = float(sum(len(s.completion_ids) for s in samples))
    out = worker.train_step(samples, denominator, num_micro_batches(shard_for_ranks(samples, 1), 4))
    ref_loss, _ = reference_loss_and_grad_norm(random_model_dir, samples)
    assert out["loss"] == pytest.approx(ref_loss, rel=1e-3)
    optimizer = worker.backend.optimizer if backend == "fsdp2" else worker.backend.engine.optimizer
    optimizer = getattr(optimizer, "optimizer", optimizer)  # ZeRO wraps the torch optimizer
    devices = {t.device.type for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)}
    assert devices == {"cpu"}
    torch.distributed.destroy_process_group()
