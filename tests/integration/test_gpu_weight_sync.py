"""GPU weight transports (`rlvr.sync.transport`): marked `gpu`, skipped without CUDA.

* NCCL broadcast between 2 processes, one GPU each: NCCL refuses two ranks of one
  communicator on the same GPU, so this needs 2 GPUs (colocated trainer and engine
  use CUDA IPC instead). tests/integration/test_gpu.py runs a 1-rank NCCL group
  beside a trainer's default NCCL group on one GPU.
* gloo broadcast of CUDA tensors between 2 processes sharing one GPU: what a GPU
  side of a gloo group does (the driver picks gloo unless trainer and engines both
  have GPUs, and a side on a GPU builds its group with its CUDA device).
* CUDA IPC between 2 processes on one GPU: the sender packs CUDA tensors and hands out
  `torch.multiprocessing.reductions.reduce_tensor` handles, the receiver rebuilds them.

Both check exact bytes (names, dtypes, shapes, values) and the checksums.
"""

from __future__ import annotations

import pytest
import torch

from rlvr.sync.transport import BroadcastGroup, WeightReceiver, WeightSender
from rlvr.sync.tensors import checksum, metas_of
from tests.unit.test_weight_sync import MB, assert_same, free_port, make_state

pytestmark = pytest.mark.gpu


def _run(ctx, jobs: list[tuple], timeout: float = 180) -> dict:
    """Start one spawned process per (target, args); each puts (key, result) on the queue."""
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, queue)) for target, args in jobs]
    for p in procs:
        p.start()
    try:
        results = dict(queue.get(timeout=timeout) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert all("error" not in r for r in results.values()), results
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return results


def _broadcast_child(rank: int, group, state, device: str, queue) -> None:
    """Rank 0 sends `state` through `group`, the others receive it on `device`; each puts its
    checksum (and whether a default process group appeared) on `queue`."""
    metas = metas_of(state)
    if rank == 0:
        result = {"checksum": WeightSender("broadcast", metas, MB, group=group).push(state, version=1)["checksum"]}
    else:
        receiver = WeightReceiver("broadcast", metas, MB, group=group, device=device)
        got = [(n, t.clone()) for n, t in receiver.pull(None)]
        assert all(t.device == torch.device(device) for _, t in got)
        assert_same(got, state)
        result = {"checksum": receiver.last_checksum}
    group.close()
    result["default_initialized"] = torch.distributed.is_initialized()
    queue.put((rank, result))


def _nccl_child(rank: int, world_size: int, port: int, queue) -> None:
    try:
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
        group = BroadcastGroup("127.0.0.1", port, rank, world_size, backend="nccl", timeout_s=120, device=device)
        _broadcast_child(rank, group, [(n, t.to(device)) for n, t in make_state(3)], device, queue)
    except BaseException as e:
        queue.put((rank, {"error": repr(e)}))
        raise


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs one GPU per rank")
def test_nccl_broadcast_between_two_gpus():
    import torch.multiprocessing as mp

    port = free_port()
    results = _run(mp.get_context("spawn"), [(_nccl_child, (r, 2, port)) for r in range(2)])
    assert results[0]["checksum"] == results[1]["checksum"] == checksum(make_state(3))
    assert not results[0]["default_initialized"] and not results[1]["default_initialized"]


def _gloo_cuda_child(rank: int, world_size: int, port: int, queue) -> None:
    try:
        torch.cuda.set_device(0)
        group = BroadcastGroup("127.0.0.1", port, rank, world_size, backend="gloo", timeout_s=120, device="cuda:0")
        _broadcast_child(rank, group, [(n, t.cuda()) for n, t in make_state(5)], "cuda:0", queue)
    except BaseException as e:
        queue.put((rank, {"error": repr(e)}))
        raise


def test_gloo_broadcast_of_cuda_tensors_between_two_processes_on_one_gpu():
    import torch.multiprocessing as mp

    port = free_port()
    results = _run(mp.get_context("spawn"), [(_gloo_cuda_child, (r, 2, port)) for r in range(2)])
    assert results[0]["checksum"] == results[1]["checksum"] == checksum(make_state(5))
    assert not results[0]["default_initialized"] and not results[1]["default_initialized"]


def _ipc_sender(manifests, done, queue) -> None:
    try:
        state = [(n, t.cuda()) for n, t in make_state(4)]
        sender = WeightSender("ipc", metas_of(state), MB)
        manifest = sender.push(state, version=2)
        manifests.put(manifest)
        assert done.wait(timeout=120), "the receiver never finished"
        sender.release(2)
        queue.put(("sender", {"checksum": manifest["checksum"], "buckets": manifest["buckets"]}))
    except BaseException as e:
        queue.put(("sender", {"error": repr(e)}))
        raise


def _ipc_receiver(manifests, done, queue) -> None:
    try:
        metas = metas_of(make_state(4))
        receiver = WeightReceiver("ipc", metas, MB, device="cuda:0")
        manifest = manifests.get(timeout=120)
        assert all(isinstance(h, tuple) for h in manifest["handles"])
        got = [(n, t.clone()) for n, t in receiver.pull(manifest)]
        assert all(t.is_cuda for _, t in got)
        assert_same(got, make_state(4))
        queue.put(("receiver", {"checksum": receiver.last_checksum}))
    except BaseException as e:
        queue.put(("receiver", {"error": repr(e)}))
        raise
    finally:
        done.set()


def test_cuda_ipc_round_trip_between_two_processes():
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    manifests, done = ctx.Queue(), ctx.Event()
    results = _run(ctx, [(_ipc_sender, (manifests, done)), (_ipc_receiver, (manifests, done))])
    assert results["sender"]["buckets"] >= 4
    assert results["receiver"]["checksum"] == results["sender"]["checksum"] == checksum(make_state(4))
