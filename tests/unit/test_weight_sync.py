"""Weight transports (`rlvr.sync.transport`): bucket plans, byte packing, checksums, and the
broadcast (real 3-process gloo group), disk and Ray-object-store ipc round trips."""

from __future__ import annotations

import doctest
import json
import os
import random
import socket

import pytest
import torch

import rlvr.sync.tensors
from rlvr.sync.transport import BroadcastGroup, WeightReceiver, WeightSender
from rlvr.sync.tensors import TensorMeta, WeightSyncError, checksum, metas_of, pack, plan_buckets, unpack

MB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_state(seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """About 7 MB in several dtypes, with a 0-d, an empty and a tied tensor."""
    g = torch.Generator().manual_seed(seed)
    embed = torch.randn(700, 1024, generator=g)
    return [
        ("embed.weight", embed),
        ("layers.0.w", torch.randn(1000, 777, generator=g).to(torch.bfloat16)),
        ("layers.0.b", torch.randn(333, generator=g).to(torch.float16)),
        ("steps", torch.randint(0, 10**12, (1001,), generator=g)),
        ("scale", torch.tensor(0.5 + seed)),
        ("empty", torch.empty(0, 3)),
        ("mask", torch.rand(77, generator=g) > 0.5),
        ("layers.1.w", torch.randn(256, 512, generator=g)),
        ("layers.1.b", torch.randn(512, generator=g)),
        ("layers.2.w", torch.randn(300, 1024, generator=g).to(torch.bfloat16)),
        ("lm_head.weight", embed),  # tied: the same storage twice
    ]


def assert_same(got: list[tuple[str, torch.Tensor]], want: list[tuple[str, torch.Tensor]]) -> None:
    assert [n for n, _ in got] == [n for n, _ in want]
    for (name, a), (_, b) in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a.cpu(), b.cpu()), name


# ------------------------------------------------------------------ pure helpers


def test_module_doctests():
    result = doctest.testmod(rlvr.sync.tensors)
    assert result.attempted > 5 and result.failed == 0


def test_plan_buckets_bound_order_and_oversize():
    rng = random.Random(0)
    dtypes = ["float32", "bfloat16", "int64", "bool"]
    metas = [TensorMeta(f"t{i}", (rng.randint(0, 300),), rng.choice(dtypes)) for i in range(200)]
    for bucket_bytes in (1, 64, 500, 2048, 10**9):
        buckets = plan_buckets(metas, bucket_bytes)
        assert [i for b in buckets for i in b] == list(range(len(metas)))  # consecutive, in order
        for b in buckets:
            assert b, "no empty bucket"
            size = sum(metas[i].nbytes for i in b)
            assert size <= bucket_bytes or len(b) == 1
        # greedy: the next bucket's first tensor would not have fit in this one
        for b, nxt in zip(buckets, buckets[1:]):
            assert sum(metas[i].nbytes for i in b) + metas[nxt[0]].nbytes > bucket_bytes
    big = [TensorMeta("a", (2,), "float32"), TensorMeta("huge", (100,), "float32"), TensorMeta("b", (2,), "float32")]
    assert plan_buckets(big, 64) == [[0], [1], [2]]
    assert plan_buckets([], 64) == []
    with pytest.raises(ValueError):
        plan_buckets(big, 0)


def test_pack_unpack_round_trip_every_dtype_and_layout():
    base = torch.randn(6, 5)
    tensors = [
        torch.randn(7).to(torch.bfloat16),  # 14 bytes: the next float32 starts unaligned
        torch.randn(3, 4),
        torch.randn(5).to(torch.float16),
        torch.randint(-(2**40), 2**40, (9,)),
        torch.tensor(3.25),  # 0-d
        torch.empty(0, 4),  # empty, unaligned offset
        base.t(),  # non-contiguous
        base[:, ::2],  # strided slice
        base,  # tied with the two above
        torch.tensor([True, False, True]),
    ]
    metas = metas_of((f"t{i}", t) for i, t in enumerate(tensors))
    buffer = pack(tensors)
    assert buffer.dtype == torch.uint8 and buffer.dim() == 1
    assert buffer.numel() == sum(m.nbytes for m in metas)
    assert_same(unpack(buffer, metas), [(f"t{i}", t) for i, t in enumerate(tensors)])
    assert pack([]).numel() == 0 and unpack(pack([]), []) == []
    with pytest.raises(WeightSyncError):
        unpack(buffer[:-1], metas)


def test_checksum_tracks_bytes_names_and_order():
    state = make_state()
    same = [(n, t.clone()) for n, t in state]
    assert checksum(state) == checksum(same)
    flipped = [(n, t.clone()) for n, t in state]
    flipped[1][1][500, 3] += 1  # one bfloat16 element
    assert checksum(flipped) != checksum(state)
    assert checksum(state[::-1]) != checksum(state)
    assert checksum([("x", torch.ones(2))]) != checksum([("y", torch.ones(2))])
    # the float32 bits of 0.0 and -0.0 differ: the hash is over bytes, not values
    assert checksum([("x", torch.tensor([0.0]))]) != checksum([("x", torch.tensor([-0.0]))])


def test_push_rejects_tensors_that_do_not_match_the_metas(tmp_path):
    state = make_state()
    sender = WeightSender("disk", metas_of(state), MB, folder=str(tmp_path))
    renamed = [("layers.0.W" if n == "layers.0.w" else n, t) for n, t in state]
    with pytest.raises(WeightSyncError, match="layers.0.W"):
        sender.push(renamed, version=1)
    reshaped = [(n, t.reshape(-1) if n == "layers.0.w" else t) for n, t in state]
    with pytest.raises(WeightSyncError, match=r"'layers.0.w' \(777000,\)"):
        sender.push(reshaped, version=1)
    retyped = [(n, t.float() if n == "layers.0.b" else t) for n, t in state]
    with pytest.raises(WeightSyncError, match="'layers.0.b'.*float32"):
        sender.push(retyped, version=1)
    with pytest.raises(WeightSyncError, match="ran out before 'lm_head.weight'"):
        sender.push(state[:-1], version=1)
    with pytest.raises(WeightSyncError, match="more tensors.*'extra'"):
        sender.push(state + [("extra", torch.ones(1))], version=1)


# ------------------------------------------------------------------ disk


def test_disk_round_trip_manifest_and_cleanup(tmp_path):
    state1, state2 = make_state(1), make_state(2)
    metas = metas_of(state1)
    sender = WeightSender("disk", metas, MB, folder=str(tmp_path))
    receiver = WeightReceiver("disk", metas, MB)
    m1 = sender.push(state1, version=1)
    assert m1["method"] == "disk" and m1["buckets"] == len(plan_buckets(metas, MB)) >= 4
    assert m1["bytes"] == sum(m.nbytes for m in metas)
    assert m1["checksum"] == checksum(state1)
    with open(tmp_path / "v1" / "manifest.json") as f:
        assert json.load(f) == m1
    assert sorted(os.listdir(tmp_path / "v1")) == sorted(["manifest.json"] + [os.path.basename(p) for p in m1["handles"]])

    m2 = sender.push(state2, version=2)
    assert not (tmp_path / "v1").exists() and (tmp_path / "v2" / "manifest.json").exists()
    got = list(receiver.pull(m2))
    assert_same(got, state2)
    assert receiver.last_checksum == m2["checksum"] != m1["checksum"]
    # a bucket's last tensor (which a `for` loop still holds while the next bucket
    # arrives) is a copy, so it does not pin its bucket; aligned others are views of it
    bucket = next(b for b in plan_buckets(metas, MB) if len(b) > 1)
    sizes = [got[i][1].untyped_storage().nbytes() for i in bucket]
    assert sizes[-1] == metas[bucket[-1]].nbytes
    assert sizes[0] == sum(metas[i].nbytes for i in bucket)  # offset 0: a view


def test_disk_torn_or_missing_files_fail_clearly_before_any_tensor(tmp_path):
    state = make_state()
    metas = metas_of(state)
    manifest = WeightSender("disk", metas, MB, folder=str(tmp_path)).push(state, version=3)
    receiver = WeightReceiver("disk", metas, MB)
    path = manifest["handles"][1]
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)
    with pytest.raises(WeightSyncError, match="bucket_1.safetensors is torn"):
        receiver.pull(manifest)
    os.remove(path)
    with pytest.raises(WeightSyncError, match="bucket_1.safetensors is missing"):
        receiver.pull(manifest)
    os.remove(tmp_path / "v3" / "manifest.json")
    with pytest.raises(WeightSyncError, match="no manifest.json"):
        receiver.pull(manifest)
    with pytest.raises(WeightSyncError, match="needs the sender's manifest"):
        receiver.pull(None)


# ------------------------------------------------------------------ broadcast (3 real processes)


def _broadcast_child(rank: int, world_size: int, port: int, default_port: int, queue) -> None:
    import torch.distributed as dist

    try:
        if rank == 0:  # the trainer's own default group exists first
            dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{default_port}", rank=0, world_size=1)
        group = BroadcastGroup("127.0.0.1", port, rank, world_size, timeout_s=60)
        metas = metas_of(make_state(0))
        result = {}
        if rank == 0:
            sender = WeightSender("broadcast", metas, MB, group=group)
            result["checksums"] = [sender.push(make_state(v), version=v)["checksum"] for v in (0, 1)]
            t = torch.ones(1)
            dist.all_reduce(t)  # the default group still works beside ours
            result["default_world_size"] = dist.get_world_size()
        else:
            receiver = WeightReceiver("broadcast", metas, MB, group=group)
            result["checksums"] = []
            for v in (0, 1):
                assert_same(list(receiver.pull(None)), make_state(v))
                result["checksums"].append(receiver.last_checksum)
        group.close()
        result["default_initialized"] = dist.is_initialized()
        queue.put((rank, result))
    except BaseException as e:  # report, so the parent fails with the reason
        queue.put((rank, {"error": repr(e)}))
        raise


def test_broadcast_between_three_processes_beside_the_default_group():
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port, default_port = free_port(), free_port()
    procs = [ctx.Process(target=_broadcast_child, args=(r, 3, port, default_port, queue)) for r in range(3)]
    for p in procs:
        p.start()
    try:
        results = dict(queue.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all("error" not in r for r in results.values()), results
    assert [p.exitcode for p in procs] == [0, 0, 0]
    sent = results[0]["checksums"]
    assert sent == [checksum(make_state(v)) for v in (0, 1)] and sent[0] != sent[1]
    assert results[1]["checksums"] == results[2]["checksums"] == sent
    assert results[0]["default_initialized"] and results[0]["default_world_size"] == 1
    assert not results[1]["default_initialized"] and not results[2]["default_initialized"]


# ------------------------------------------------------------------ ipc through the Ray object store


class IpcReceiverActor:
    """An engine stand-in: a Ray actor in its own process that pulls from object refs."""

    def __init__(self, metas: list[TensorMeta], bucket_bytes: int):
        self.receiver = WeightReceiver("ipc", metas, bucket_bytes)

    def pull(self, manifest: dict):
        got = [(name, t.clone()) for name, t in self.receiver.pull(manifest)]
        return os.getpid(), got, self.receiver.last_checksum


def test_ipc_through_ray_object_store_to_another_process(ray_cluster):
    ray = ray_cluster
    state = make_state(5)
    metas = metas_of(state)
    sender = WeightSender("ipc", metas, MB)
    actor = ray.remote(num_cpus=0.5)(IpcReceiverActor).remote(metas, MB)
    manifest = sender.push(state, version=7)
    assert manifest["buckets"] >= 4 and all(isinstance(h, ray.ObjectRef) for h in manifest["handles"])
    pid, got, received_checksum = ray.get(actor.pull.remote(manifest), timeout=120)
    assert pid != os.getpid()
    assert_same(got, state)
    assert received_checksum == manifest["checksum"] == checksum(state)
    sender.release(7)
    assert sender.transport._kept == {}
    ray.kill(actor)
