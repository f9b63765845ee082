"""GPU paths that cannot run on the CPU machines: marked `gpu`, skipped without CUDA.

They exercise the same trainer code on CUDA with NCCL (one rank, each test's trainer
in a fresh spawned process, no Ray), using only documented torch/DeepSpeed APIs, and check what the CPU tests check:
the loss and gradient norm equal a plain single-process computation. They also push
the trained weights out of a CUDA trainer rank (FSDP2's `get_model_state_dict` path,
which the CPU tests never take) through the two broadcast groups a GPU run can build.
"""

from __future__ import annotations


import pytest

from rlvr.config import AlgorithmConfig, TrainerConfig

pytestmark = pytest.mark.gpu

MB = 1 << 20


def _in_fresh_process(fn, *args, timeout: float = 300):
    """`fn(*args)` in a spawned process; returns its result, or fails with its traceback.

    One trainer per process, as in a run (each rank is its own Ray actor process), and
    not only for tidiness: DeepSpeed keeps groups derived from the first default group in
    module globals (a clone of the world group in `deepspeed.utils.groups`), so a second
    DeepSpeed engine in one process, after `destroy_process_group`, fails with "Group ...
    is not registered"."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_main, args=(fn, args, queue))
    proc.start()
    try:
        status, payload = queue.get(timeout=timeout)
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
    if status != "ok":
        pytest.fail(f"{fn.__name__}{args} failed in its process:\n{payload}", pytrace=False)
    assert proc.exitcode == 0
    return payload


def _child_main(fn, args, queue) -> None:
    import traceback

    try:
        result = ("ok", fn(*args))
    except BaseException:
        result = ("error", traceback.format_exc())
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    queue.put(result)


def _trained_worker(model_dir: str, cfg: TrainerConfig, algo: AlgorithmConfig | None = None, lora=None):
    """A one-rank TrainerWorker on CUDA after one step on 9 samples (3 prompts x 3); (worker, step output, samples)."""
    import torch

    from rlvr.trainer.batch import num_micro_batches, shard_for_ranks
    from rlvr.cluster.env import free_port
    from rlvr.trainer.worker import TrainerWorker
    from tests.helpers.stack import make_samples

    samples = make_samples(9, group=3)  # GRPO-like groups: the shared-prompt layout (KV cache on CUDA)
    worker = TrainerWorker(0, 1, cfg, algo or AlgorithmConfig(), 0, lora=lora)
    for attempt in range(3):
        # `free_port` probes 127.0.0.1 and lets the port go; the default group's TCPStore then
        # binds it on every interface, and once (on the H100) it was taken in between: EADDRINUSE.
        # Nothing is initialised when the store fails, so another port is a clean retry.
        try:
            worker.setup(("127.0.0.1", free_port()), model_dir)
            break
        except torch.distributed.DistNetworkError as e:
            if "EADDRINUSE" not in str(e) or attempt == 2:
                raise
    assert worker.device.type == "cuda"
    denominator = float(sum(len(s.completion_ids) for s in samples))
    out = worker.train_step(samples, denominator, num_micro_batches(shard_for_ranks(samples, 1), cfg.micro_batch_size))
    return worker, out, samples


def _step_and_reference(model_dir: str, backend: str, offload: bool) -> dict:
    import torch

    from tests.integration.test_trainer_group import reference_loss_and_grad_norm

    cfg = TrainerConfig(backend=backend, num_workers=1, micro_batch_size=4, offload=offload)
    worker, out, samples = _trained_worker(model_dir, cfg)
    ref_loss, ref_norm = reference_loss_and_grad_norm(model_dir, samples)
    optimizer = worker.backend.optimizer if backend == "fsdp2" else worker.backend.engine.optimizer
    optimizer = getattr(optimizer, "optimizer", optimizer)  # ZeRO wraps the torch optimizer
    # AdamW's `step` counts are 0-d CPU tensors wherever the moments live: look at the moments
    devices = {t.device.type for state in optimizer.state.values() for t in state.values()
               if torch.is_tensor(t) and t.dim() > 0}
    return {"loss": out["loss"], "grad_norm": out["grad_norm"], "ref_loss": ref_loss, "ref_norm": ref_norm,
            "optimizer_state_devices": sorted(devices)}


@pytest.mark.parametrize("backend", ["fsdp2", "deepspeed"])
def test_trainer_rank_on_cuda_matches_reference(random_model_dir, backend):
    r = _in_fresh_process(_step_and_reference, random_model_dir, backend, False)
    assert r["loss"] == pytest.approx(r["ref_loss"], rel=1e-3)
    assert r["grad_norm"] == pytest.approx(r["ref_norm"], rel=1e-2)
    assert r["optimizer_state_devices"] == ["cuda"]


@pytest.mark.parametrize("backend", ["fsdp2", "deepspeed"])
def test_offload_keeps_training_state_in_cpu_memory(random_model_dir, backend):
    """`trainer.offload` (colocate on GPUs): the step still matches the reference, and the
    optimizer state lives in CPU memory (FSDP2 CPUOffloadPolicy / ZeRO optimizer offload)."""
    r = _in_fresh_process(_step_and_reference, random_model_dir, backend, True)
    assert r["loss"] == pytest.approx(r["ref_loss"], rel=1e-3)
    assert r["grad_norm"] == pytest.approx(r["ref_norm"], rel=1e-2)
    assert r["optimizer_state_devices"] == ["cpu"]


def _cpu_engine_receiver(port: int, metas: list, queue) -> None:
    """Spawned: the receiving end of a CPU engine (rank 1 of a 2-rank gloo broadcast group)."""
    try:
        from rlvr.sync.transport import BroadcastGroup, WeightReceiver
        from rlvr.sync.tensors import checksum

        group = BroadcastGroup("127.0.0.1", port, 1, 2, backend="gloo", timeout_s=120)
        receiver = WeightReceiver("broadcast", metas, MB, group=group)
        got = [(n, t.clone()) for n, t in receiver.pull(None)]
        result = {"checksum": receiver.last_checksum, "recomputed": checksum(got),
                  "devices": sorted({t.device.type for _, t in got})}
        group.close()
        queue.put(result)
    except BaseException as e:
        queue.put({"error": repr(e)})
        raise


def _push_weights(model_dir: str, backend: str, sync_backend: str) -> dict:
    import torch
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    from rlvr.cluster.env import free_port
    from rlvr.sync.tensors import checksum

    cfg = TrainerConfig(backend=backend, num_workers=1, micro_batch_size=4, lr=1e-3)
    worker, _, _ = _trained_worker(model_dir, cfg)
    state = worker.full_state_dict()
    before = load_file(f"{model_dir}/model.safetensors")
    assert set(before) <= set(state)  # HF names (a tied lm_head may be listed as well)
    assert all(t.device.type == "cpu" for t in state.values())
    assert not torch.equal(state["model.layers.0.mlp.up_proj.weight"], before["model.layers.0.mlp.up_proj.weight"])
    metas = worker.weight_metas()
    port = free_port()
    child = queue = None
    got = None
    if sync_backend == "gloo":
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_cpu_engine_receiver, args=(port, metas, queue))
        child.start()
    try:
        worker.join_sync_group("broadcast", metas, MB, "127.0.0.1", port, 2 if child else 1, sync_backend)
        manifest = worker.push_weights(version=1)
        if child is not None:
            got = queue.get(timeout=180)
    finally:
        if getattr(worker, "sender", None) is not None:
            worker.sender.group.close()
        if child is not None:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
    return {"manifest": {k: v for k, v in manifest.items() if k != "handles"}, "expected": checksum(state.items()),
            "received": got, "receiver_exitcode": child.exitcode if child is not None else None}


@pytest.mark.parametrize("sync_backend", ["gloo", "nccl"])
@pytest.mark.parametrize("backend", ["fsdp2", "deepspeed"])
def test_cuda_trainer_pushes_its_weights(random_model_dir, backend, sync_backend):
    """`push_weights` from a CUDA trainer rank, through the trainer's own `join_sync_group`:

    * gloo, 2 ranks: trainer on a GPU, engine on CPUs (the driver picks gloo unless both
      sides have GPUs); the engine is a spawned process here, not a Ray actor.
    * nccl, 1 rank: the NCCL group built from a TCPStore beside the trainer's default
      NCCL group (one GPU cannot hold 2 NCCL ranks; the 2-GPU test is in
      test_gpu_weight_sync.py).

    What arrives (or, for one rank, what is sent) hashes like the gathered state dict,
    which is HF-named, on CPU and changed by the step."""
    r = _in_fresh_process(_push_weights, random_model_dir, backend, sync_backend)
    assert r["manifest"]["checksum"] == r["expected"]
    assert r["manifest"]["buckets"] > 1
    if sync_backend == "gloo":
        got = r["received"]
        assert "error" not in got, got
        assert got["checksum"] == got["recomputed"] == r["expected"]
        assert got["devices"] == ["cpu"]
        assert r["receiver_exitcode"] == 0
