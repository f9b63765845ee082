"""Weight transports: push trainer rank 0's weights into the rollout engines.

Both sides compute the same list of `TensorMeta` once at setup (names, shapes,
dtypes in the order the trainer yields its state), and from it the same bucket
plan (`plan_buckets`: consecutive tensors, at most `bucket_bytes` per bucket).
A sync then moves the weights bucket by bucket: the sender `pack`s each bucket
into one flat uint8 buffer (any dtype, bfloat16 included, goes as raw bytes),
the receiver `unpack`s it into (name, tensor) views and yields them in meta
order, which is what vLLM's layer-wise `reload_weights(weights_iterator=...)`
consumes (see `rlvr.rollout.vllm_engine`). No bucket sizes, names or offsets
travel: both sides already know them.

Three methods, one interface (`WeightSender.push` on the trainer,
`WeightReceiver.pull` on each engine; the driver calls them at the same time):

* "broadcast": one collective per bucket in a `BroadcastGroup` (trainer rank 0 is
  rank 0, engines 1..E). Gloo on CPU, NCCL on GPUs. Needs no manifest. Only one
  bucket's buffer is alive on either side, so a receiver's extra memory is about
  one bucket, provided its consumer does not keep the yielded views (vLLM's
  layer-wise reload keeps a layer's weights until the layer is complete). Two
  details make that hold on CPU: a receive buffer is its own anonymous `mmap`,
  returned to the OS when its last view dies (malloc keeps freed 16 MB buckets
  in its heap, and RSS crept to 4 buckets in our measurements), and each bucket's
  last tensor is yielded as a copy (unless it is over half the bucket), because a
  `for` loop's variable still holds it while the next bucket arrives. The pull is lazy:
  a receiver that stops consuming early leaves the sender waiting until the
  group's timeout, and so does a sender that fails half way (e.g. a tensor that
  does not match the metas). The group is built from a `TCPStore` directly
  (`ProcessGroupGloo(store, rank, size, timeout)` /
  `ProcessGroupNCCL(store, rank, size, options)`, as `torch.distributed`'s own
  `_new_process_group_helper` does), never `init_process_group`, so it lives
  beside the trainer's default group and vLLM's, and is driven through the
  backend's own `broadcast(tensors, BroadcastOptions)`. NCCL cannot put two ranks
  on one GPU: with a colocated trainer and engine use "ipc".
* "ipc": same node. CPU buffers go into the Ray object store (`ray.put` of a numpy
  uint8 array; it is shared memory on a node, and `ray.get` of a numpy array maps
  it without a copy, so the yielded tensors are *read-only* views of it). CUDA
  buffers go as CUDA IPC handles (`torch.multiprocessing.reductions.reduce_tensor`;
  the receiver calls the returned rebuild function, with the device index
  rewritten to its own numbering of the same GPU). All buckets exist at once
  here; the sender keeps them until `release(version)` (torch's own IPC
  reference counting then keeps a CUDA block alive until the receivers drop it).
* "disk": `<folder>/v<version>/bucket_<i>.safetensors` (one uint8 tensor "data" =
  the packed bucket), each written to a temporary name, fsynced and renamed, then
  `manifest.json` last; the sender deletes the version folders it wrote before.
  For engines on other nodes the folder must be on a shared file system. A pull
  checks, before yielding anything, that the manifest and every bucket file are
  there with the expected size, so a torn or missing file never half-loads.

Weight sync checks itself: both sides checksum (CRC-32, chained) every tensor's
name, dtype, shape and bytes in order (a check against corruption in transit, not
tampering; blake2b was 0.19 s per side for 152 MB on the 2-core CPU, CRC-32 0.05 s); the sender returns its `checksum` in the manifest and
the receiver leaves `last_checksum` once the last tensor has been yielded, for the
caller to compare (the receiver does not raise: by then the weights are loaded).
Hashing costs a device-to-host copy per bucket on GPUs; `verify=False` skips it.
"""

from __future__ import annotations

import datetime
import json
import math
import mmap
import os
import shutil
import warnings
import zlib
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from rlvr.checkpoint import fsync_dir

METHODS = ("broadcast", "ipc", "disk")


class WeightSyncError(RuntimeError):
    """A sync that cannot be done as planned (mismatched tensor, missing or torn bucket)."""


@dataclass(frozen=True)
class TensorMeta:
    """What both sides know of one tensor. `dtype` is torch's name without "torch."."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        """
        >>> TensorMeta("w", (3, 4), "bfloat16").nbytes
        24
        >>> TensorMeta("scalar", (), "int64").nbytes
        8
        """
        return math.prod(self.shape) * torch_dtype(self.dtype).itemsize


def torch_dtype(name: str) -> torch.dtype:
    """
    >>> torch_dtype("bfloat16")
    torch.bfloat16
    """
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r}")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """
    >>> dtype_name(torch.float16)
    'float16'
    """
    return str(dtype).removeprefix("torch.")


def metas_of(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[TensorMeta]:
    """
    >>> metas_of([("a", torch.zeros(2, 3)), ("b", torch.tensor(1))])
    [TensorMeta(name='a', shape=(2, 3), dtype='float32'), TensorMeta(name='b', shape=(), dtype='int64')]
    """
    return [TensorMeta(name, tuple(t.shape), dtype_name(t.dtype)) for name, t in named_tensors]


def plan_buckets(metas: list[TensorMeta], bucket_bytes: int) -> list[list[int]]:
    """Consecutive indices, each bucket at most `bucket_bytes`; a larger tensor alone.

    >>> m = [TensorMeta(n, (k,), "float32") for n, k in [("a", 4), ("b", 2), ("c", 10), ("d", 1)]]
    >>> plan_buckets(m, 24)   # 16 + 8 bytes fit; c (40 bytes) is alone
    [[0, 1], [2], [3]]
    >>> plan_buckets(m, 1000)
    [[0, 1, 2, 3]]
    >>> plan_buckets([], 24)
    []
    """
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    buckets: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, meta in enumerate(metas):
        if current and size + meta.nbytes > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current.append(i)
        size += meta.nbytes
    if current:
        buckets.append(current)
    return buckets


def _flat_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def pack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One flat uint8 buffer: the tensors' bytes back to back (on the first tensor's device).

    >>> pack([torch.tensor([1], dtype=torch.int16), torch.tensor(True)]).tolist()
    [1, 0, 1]
    """
    device = tensors[0].device if tensors else torch.device("cpu")
    sizes = [t.numel() * t.element_size() for t in tensors]
    out = torch.empty(sum(sizes), dtype=torch.uint8, device=device)
    offset = 0
    for t, n in zip(tensors, sizes):
        out[offset:offset + n].copy_(_flat_bytes(t))
        offset += n
    return out


def unpack(buffer: torch.Tensor, metas: list[TensorMeta]) -> list[tuple[str, torch.Tensor]]:
    """Split a `pack`ed buffer back into named tensors: views where the byte offset is
    aligned for the dtype, copies where it is not.

    >>> unpack(torch.tensor([1, 0, 1], dtype=torch.uint8), [TensorMeta("a", (1,), "int16"), TensorMeta("b", (), "bool")])
    [('a', tensor([1], dtype=torch.int16)), ('b', tensor(True))]
    """
    expected = sum(m.nbytes for m in metas)
    if buffer.dtype != torch.uint8 or buffer.dim() != 1 or buffer.numel() != expected:
        raise WeightSyncError(f"bucket has {buffer.numel()} {buffer.dtype} elements (dim {buffer.dim()}), "
                              f"expected {expected} uint8 bytes for {[m.name for m in metas]}")
    out = []
    offset = 0
    for meta in metas:
        dtype, n = torch_dtype(meta.dtype), meta.nbytes
        chunk = buffer[offset:offset + n]
        if (buffer.storage_offset() + offset) % dtype.itemsize:
            chunk = chunk.clone()  # view(dtype) needs an aligned storage offset
        out.append((meta.name, chunk.view(dtype).view(meta.shape)))
        offset += n
    return out


class _Hasher:
    """The running checksum: name, dtype, shape and raw bytes of each tensor, in order."""

    def __init__(self):
        self._crc = 0

    def add(self, meta: TensorMeta, data) -> None:
        self._crc = zlib.crc32(f"{meta.name}\0{meta.dtype}\0{meta.shape}\0{meta.nbytes}\0".encode(), self._crc)
        self._crc = zlib.crc32(data, self._crc)

    def add_bucket(self, metas: list[TensorMeta], buffer: torch.Tensor) -> None:
        view = memoryview(buffer.cpu().numpy())
        offset = 0
        for meta in metas:
            self.add(meta, view[offset:offset + meta.nbytes])
            offset += meta.nbytes

    def hexdigest(self) -> str:
        return f"{self._crc:08x}"


def checksum(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """Order-dependent CRC-32 of names, dtypes, shapes and raw bytes.

    >>> a = checksum([("w", torch.ones(2))])
    >>> a == checksum([("w", torch.ones(2))]), a == checksum([("w", torch.zeros(2))])
    (True, False)
    """
    hasher = _Hasher()
    for name, t in named_tensors:
        hasher.add(TensorMeta(name, tuple(t.shape), dtype_name(t.dtype)), _flat_bytes(t).cpu().numpy())
    return hasher.hexdigest()


class BroadcastGroup:
    """A torch.distributed process group that is NOT the default group (the trainer process
    already has its own default group for the trainer ranks, and a vLLM engine process has
    vLLM's), spanning trainer rank 0 (rank 0 here) and the engines (ranks 1..E). Gloo on
    CPU, NCCL on CUDA.

    Rank 0 hosts the `TCPStore` at host:port; the others connect to it. Every rank must
    construct its group at about the same time (within `timeout_s`).
    """

    def __init__(self, host: str, port: int, rank: int, world_size: int, backend: str = "gloo",
                 timeout_s: float = 600.0, device: str = "cpu"):
        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=timeout_s)
        self.rank, self.world_size, self.backend = rank, world_size, backend
        self.device = torch.device(device)
        self._store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout,
                                    wait_for_workers=False)
        store = dist.PrefixStore(f"rlvr-weight-sync/{backend}/", self._store)
        if backend == "gloo":
            self._pg = dist.ProcessGroupGloo(store, rank, world_size, timeout)
        elif backend == "nccl":
            if self.device.type != "cuda":
                raise ValueError(f"the nccl backend needs a cuda device, got {device!r}")
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            options.is_high_priority_stream = False
            self._pg = dist.ProcessGroupNCCL(store, rank, world_size, options)
        else:
            raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
        self._pg._set_sequence_number_for_group()  # as torch's _new_process_group_helper does

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        """In place on every rank; returns once this rank's copy is complete."""
        import torch.distributed as dist

        options = dist.BroadcastOptions()
        options.rootRank = src
        options.rootTensor = 0
        self._pg.broadcast([tensor], options).wait()
        if tensor.is_cuda:  # wait() only orders the current stream after NCCL's
            torch.cuda.current_stream(tensor.device).synchronize()

    def close(self) -> None:
        if self._pg is not None and hasattr(self._pg, "shutdown"):
            self._pg.shutdown()
        self._pg = self._store = None


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")




def _write_atomic(path: str, write) -> None:
    """`write(tmp_path)`, fsync it, rename to `path`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


class WeightSender:
    """Trainer rank 0 side. method in ("broadcast", "ipc", "disk")."""

    def __init__(self, method: str, metas: list[TensorMeta], bucket_bytes: int,
                 group: BroadcastGroup | None = None, folder: str | None = None, verify: bool = True):
        _check_method(method)
        if method == "broadcast" and group is None:
            raise ValueError("the broadcast method needs a BroadcastGroup")
        if method == "disk" and folder is None:
            raise ValueError("the disk method needs a folder")
        self.method, self.metas, self.group, self.verify = method, list(metas), group, verify
        self.folder = os.path.abspath(folder) if folder is not None else None
        self.buckets = plan_buckets(self.metas, bucket_bytes)
        self._kept: dict[int, list] = {}  # ipc: version -> buffers / object refs
        self._written: set[int] = set()  # disk: version folders this sender wrote

    def push(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> dict:
        """Send the tensors (in metas order) bucket by bucket; returns the manifest."""
        source = iter(named_tensors)
        hasher = _Hasher() if self.verify else None
        handles = []
        for i, bucket in enumerate(self.buckets):
            metas = [self.metas[j] for j in bucket]
            buffer = pack([self._take(source, meta) for meta in metas])
            if hasher is not None:
                hasher.add_bucket(metas, buffer)
            handles.append(self._send(i, buffer, version))
            del buffer
        extra = next(source, None)
        if extra is not None:
            raise WeightSyncError(f"weight sync: got more tensors than the {len(self.metas)} planned, "
                                  f"starting with {extra[0]!r}")
        manifest = {
            "method": self.method,
            "version": version,
            "buckets": len(self.buckets),
            "bytes": sum(m.nbytes for m in self.metas),
            "checksum": hasher.hexdigest() if hasher is not None else None,
            "handles": None if self.method == "broadcast" else handles,
        }
        if self.method == "disk":
            self._finish_disk(manifest)
        return manifest

    def release(self, version: int) -> None:
        """Drop the buffers (ipc) kept for `version`: call once every receiver pulled it."""
        self._kept.pop(version, None)

    def _take(self, source: Iterator[tuple[str, torch.Tensor]], meta: TensorMeta) -> torch.Tensor:
        try:
            name, tensor = next(source)
        except StopIteration:
            raise WeightSyncError(f"weight sync: tensors ran out before {meta.name!r} "
                                  f"({len(self.metas)} planned)") from None
        got = TensorMeta(name, tuple(tensor.shape), dtype_name(tensor.dtype))
        if got != meta:
            raise WeightSyncError(f"weight sync: tensor {name!r} {got.shape} {got.dtype} does not match the "
                                  f"planned {meta.name!r} {meta.shape} {meta.dtype}")
        return tensor

    def _send(self, index: int, buffer: torch.Tensor, version: int):
        if self.method == "broadcast":
            self.group.broadcast(buffer.to(self.group.device), src=0)
            return None
        if self.method == "disk":
            return self._write_bucket(index, buffer, version)
        if buffer.is_cuda:
            from torch.multiprocessing.reductions import reduce_tensor

            self._kept.setdefault(version, []).append(buffer)
            return reduce_tensor(buffer)
        import ray

        ref = ray.put(buffer.numpy())
        self._kept.setdefault(version, []).append(ref)
        return ref

    def _version_dir(self, version: int) -> str:
        return os.path.join(self.folder, f"v{version}")

    def _write_bucket(self, index: int, buffer: torch.Tensor, version: int) -> str:
        from safetensors.torch import save_file

        folder = self._version_dir(version)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"bucket_{index}.safetensors")
        _write_atomic(path, lambda tmp: save_file({"data": buffer.cpu()}, tmp))
        return path

    def _finish_disk(self, manifest: dict) -> None:
        version = manifest["version"]
        folder = self._version_dir(version)
        os.makedirs(folder, exist_ok=True)

        def write(tmp: str) -> None:
            with open(tmp, "w") as f:
                json.dump(manifest, f, indent=2)

        _write_atomic(os.path.join(folder, "manifest.json"), write)
        fsync_dir(folder)
        for old in self._written - {version}:
            shutil.rmtree(self._version_dir(old), ignore_errors=True)
        self._written = {version}


def _host_buffer(nbytes: int) -> torch.Tensor:
    """A CPU uint8 buffer in its own anonymous mapping, unmapped when its last view dies
    (malloc would keep freed buckets in its heap: RSS grows to several buckets)."""
    if nbytes == 0:
        return torch.empty(0, dtype=torch.uint8)
    return torch.frombuffer(mmap.mmap(-1, nbytes), dtype=torch.uint8)


def _copy(t: torch.Tensor) -> torch.Tensor:
    if t.device.type != "cpu":
        return t.clone()
    return _host_buffer(t.numel() * t.element_size()).view(t.dtype).view(t.shape).copy_(t)


class WeightReceiver:
    """Engine side."""

    def __init__(self, method: str, metas: list[TensorMeta], bucket_bytes: int,
                 group: BroadcastGroup | None = None, device: str = "cpu", verify: bool = True):
        _check_method(method)
        if method == "broadcast" and group is None:
            raise ValueError("the broadcast method needs a BroadcastGroup")
        self.method, self.metas, self.group, self.verify = method, list(metas), group, verify
        self.device = torch.device(device)
        self.buckets = plan_buckets(self.metas, bucket_bytes)
        self.last_checksum: str | None = None

    def pull(self, manifest: dict | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, tensor) in metas order, receiving one bucket at a time as consumed.

        The manifest (and, for disk, every bucket file) is checked here, before the
        first tensor is asked for."""
        handles = self._check_manifest(manifest)
        self.last_checksum = None
        return self._tensors(handles)

    def _tensors(self, handles: list | None) -> Iterator[tuple[str, torch.Tensor]]:
        hasher = _Hasher() if self.verify else None
        for i, bucket in enumerate(self.buckets):
            metas = [self.metas[j] for j in bucket]
            buffer = self._receive(i, handles, sum(m.nbytes for m in metas))
            if hasher is not None:
                hasher.add_bucket(metas, buffer)
            named = unpack(buffer, metas)
            name, last = named[-1]
            if len(named) > 1 and 2 * last.numel() * last.element_size() <= buffer.numel():
                named[-1] = (name, _copy(last))  # see the module doc: a `for` loop holds it
            del buffer, last
            named.reverse()
            while named:  # pop as we go: the consumer alone decides what stays alive
                yield named.pop()
        if hasher is not None:
            self.last_checksum = hasher.hexdigest()

    def _check_manifest(self, manifest: dict | None) -> list | None:
        if self.method == "broadcast":
            if manifest is not None and manifest.get("method") != "broadcast":
                raise WeightSyncError(f"broadcast receiver got a {manifest.get('method')!r} manifest")
            return None
        if manifest is None:
            raise WeightSyncError(f"the {self.method} method needs the sender's manifest")
        if manifest.get("method") != self.method or len(manifest.get("handles") or []) != len(self.buckets):
            raise WeightSyncError(f"{self.method} receiver expects {len(self.buckets)} buckets, got a "
                                  f"{manifest.get('method')!r} manifest with {manifest.get('buckets')}")
        if self.method == "disk":
            self._check_files(manifest["handles"])
        return manifest["handles"]

    def _check_files(self, paths: list[str]) -> None:
        """Every file there, complete, of the planned size, before anything is yielded."""
        from safetensors import safe_open

        folder = os.path.dirname(paths[0]) if paths else None
        if folder is not None and not os.path.isfile(os.path.join(folder, "manifest.json")):
            raise WeightSyncError(f"weight sync (disk): {folder} has no manifest.json (push not finished)")
        for path, bucket in zip(paths, self.buckets):
            expected = [sum(self.metas[j].nbytes for j in bucket)]
            if not os.path.isfile(path):
                raise WeightSyncError(f"weight sync (disk): bucket file {path} is missing")
            try:
                with safe_open(path, framework="pt") as f:
                    shape = f.get_slice("data").get_shape()
            except Exception as e:
                raise WeightSyncError(f"weight sync (disk): bucket file {path} is torn or corrupt: {e}") from e
            if shape != expected:
                raise WeightSyncError(f"weight sync (disk): bucket file {path} holds {shape} bytes, "
                                      f"expected {expected}")

    def _receive(self, index: int, handles: list | None, nbytes: int) -> torch.Tensor:
        if self.method == "broadcast":
            if self.group.device.type == "cpu":
                buffer = _host_buffer(nbytes)
            else:
                buffer = torch.empty(nbytes, dtype=torch.uint8, device=self.group.device)
            self.group.broadcast(buffer, src=0)
        elif self.method == "disk":
            from safetensors import safe_open

            with safe_open(handles[index], framework="pt") as f:
                buffer = f.get_tensor("data")
        elif isinstance(handles[index], tuple):  # CUDA IPC handle
            rebuild, args = handles[index]
            args = list(args)
            args[6] = self.device.index if self.device.index is not None else torch.cuda.current_device()
            buffer = rebuild(*args)
        else:
            import ray

            with warnings.catch_warnings():  # a read-only view of the object store, by design
                warnings.simplefilter("ignore", UserWarning)
                buffer = torch.from_numpy(ray.get(handles[index]))
        return buffer.to(self.device)


def sync_stats(manifest: dict, seconds: float) -> dict:
    """
    >>> sync_stats({"bytes": 1024, "buckets": 2}, 0.5)
    {'sync/bytes': 1024, 'sync/buckets': 2, 'timing/sync_transfer': 0.5}
    """
    return {"sync/bytes": manifest["bytes"], "sync/buckets": manifest["buckets"], "timing/sync_transfer": seconds}
