"""Weight transports: trainer rank 0's weights into the rollout engines, bucket by bucket.

`WeightSender.push` (trainer rank 0) packs each bucket (`rlvr.sync.tensors`) and hands it
to the transport; `WeightReceiver.pull` (each engine) receives bucket by bucket and yields
(name, tensor) views in meta order, which is what vLLM's layer-wise
`reload_weights(weights_iterator=...)` consumes (`rlvr.rollout.vllm_engine`). The three
transports sit in one dict, `TRANSPORTS` (`sync.method`), behind one small interface:

* "broadcast": one collective per bucket in a `BroadcastGroup` (trainer rank 0 is rank 0,
  engines 1..E). Gloo on CPU, NCCL on GPUs. No manifest handles: sender and receivers meet
  in the collective (`collective = True`: the driver starts both ends together). Only one
  bucket's buffer is alive on either side, so a receiver's extra memory is about one
  bucket, provided its consumer does not keep the yielded views (vLLM's layer-wise reload
  keeps a layer's weights until the layer is complete). Two details make that hold on CPU:
  a receive buffer is its own anonymous `mmap`, returned to the OS when its last view dies
  (malloc keeps freed 16 MB buckets in its heap, and RSS crept to 4 buckets in our
  measurements), and each bucket's last tensor is yielded as a copy (unless it is over half
  the bucket), because a `for` loop's variable still holds it while the next bucket
  arrives. The pull is lazy: a receiver that stops consuming early leaves the sender
  waiting until the group's timeout, and so does a sender that fails half way. A peer that
  dies mid-sync makes every other member's collective fail at once (gloo: "Connection
  closed by peer", measured in ~0.1 s), so the driver can replace it and sync again. The
  group is built from a `TCPStore` directly (`ProcessGroupGloo(store, rank, size,
  timeout)` / `ProcessGroupNCCL(store, rank, size, options)`, as torch.distributed's own
  `_new_process_group_helper` does), never `init_process_group`, so it lives beside the
  trainer's default group and vLLM's. NCCL cannot put two ranks on one GPU: with a
  colocated trainer and engine use "ipc".
* "ipc": same node. CPU buffers go into the Ray object store (`ray.put` of a numpy uint8
  array; shared memory on a node, and `ray.get` of a numpy array maps it without a copy,
  so the yielded tensors are *read-only* views of it). CUDA buffers go as CUDA IPC handles
  (`torch.multiprocessing.reductions.reduce_tensor`; the receiver calls the returned
  rebuild function with the device index rewritten to its own numbering of the same GPU).
  All buckets exist at once; the sender keeps them until `release(version)`
  (`keeps_buffers = True`).
* "disk": `<folder>/v<version>/bucket_<i>.safetensors` (one uint8 tensor "data" = the
  packed bucket), each written atomically (`rlvr.run.files.atomic_write`), then
  `manifest.json` last; the sender deletes the version folders it wrote before. For
  engines on other nodes the folder must be on a shared file system. A pull checks, before
  yielding anything, that the manifest and every bucket file are there with the expected
  size, so a torn or missing file never half-loads.

The sender returns its `checksum` in the manifest and the receiver leaves `last_checksum`
once the last tensor has been yielded, for the caller to compare (the receiver does not
raise: by then the weights are loaded). Hashing costs a device-to-host copy per bucket on
GPUs; `verify=False` skips it.
"""

from __future__ import annotations

import datetime
import json
import mmap
import os
import shutil
import warnings
from typing import Iterable, Iterator

import torch

from rlvr.run.files import atomic_write, atomic_write_text, fsync_dir
from rlvr.sync.tensors import Hasher, TensorMeta, WeightSyncError, dtype_name, pack, plan_buckets, unpack


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


class Broadcast:
    """One collective per bucket in a `BroadcastGroup` (see the module doc)."""

    collective = True  # both ends run at once and meet in the collective
    keeps_buffers = False

    def __init__(self, group: BroadcastGroup | None = None, folder: str | None = None, sending: bool = False):
        if group is None:
            raise ValueError("the broadcast method needs a BroadcastGroup")
        self.group = group

    def send(self, index: int, buffer: torch.Tensor, version: int) -> None:
        self.group.broadcast(buffer.to(self.group.device), src=0)

    def finish(self, manifest: dict) -> None:
        manifest["handles"] = None

    def release(self, version: int) -> None:
        pass

    def handles(self, manifest: dict | None, buckets: list[int]) -> None:
        if manifest is not None and manifest.get("method") != "broadcast":
            raise WeightSyncError(f"broadcast receiver got a {manifest.get('method')!r} manifest")
        return None

    def receive(self, index: int, handles, nbytes: int, device: torch.device) -> torch.Tensor:
        if self.group.device.type == "cpu":
            buffer = _host_buffer(nbytes)
        else:
            buffer = torch.empty(nbytes, dtype=torch.uint8, device=self.group.device)
        self.group.broadcast(buffer, src=0)
        return buffer

    def close(self) -> None:
        self.group.close()


class _WithManifest:
    """What ipc and disk share on the receiving side: a manifest whose handles are checked first."""

    collective = False  # the engines pull what rank 0 pushed, after the push

    def handles(self, manifest: dict | None, buckets: list[int]) -> list:
        method = type(self).name
        if manifest is None:
            raise WeightSyncError(f"the {method} method needs the sender's manifest")
        if manifest.get("method") != method or len(manifest.get("handles") or []) != len(buckets):
            raise WeightSyncError(f"{method} receiver expects {len(buckets)} buckets, got a "
                                  f"{manifest.get('method')!r} manifest with {manifest.get('buckets')}")
        return manifest["handles"]

    def close(self) -> None:
        pass


class ObjectStore(_WithManifest):
    """"ipc": the Ray object store on CPU, CUDA IPC handles on a GPU (see the module doc)."""

    name = "ipc"
    keeps_buffers = True

    def __init__(self, group=None, folder: str | None = None, sending: bool = False):
        self._kept: dict[int, list] = {}  # version -> buffers / object refs

    def send(self, index: int, buffer: torch.Tensor, version: int):
        if buffer.is_cuda:
            from torch.multiprocessing.reductions import reduce_tensor

            self._kept.setdefault(version, []).append(buffer)
            return reduce_tensor(buffer)
        import ray

        ref = ray.put(buffer.numpy())
        self._kept.setdefault(version, []).append(ref)
        return ref

    def finish(self, manifest: dict) -> None:
        pass

    def release(self, version: int) -> None:
        self._kept.pop(version, None)

    def receive(self, index: int, handles: list, nbytes: int, device: torch.device) -> torch.Tensor:
        if isinstance(handles[index], tuple):  # CUDA IPC handle
            rebuild, args = handles[index]
            args = list(args)
            args[6] = device.index if device.index is not None else torch.cuda.current_device()
            return rebuild(*args)
        import ray

        with warnings.catch_warnings():  # a read-only view of the object store, by design
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(ray.get(handles[index]))


class Disk(_WithManifest):
    """"disk": safetensors bucket files and a manifest per version (see the module doc)."""

    name = "disk"
    keeps_buffers = False

    def __init__(self, group=None, folder: str | None = None, sending: bool = False):
        if sending and folder is None:
            raise ValueError("the disk method needs a folder")
        self.folder = os.path.abspath(folder) if folder is not None else None
        self._written: set[int] = set()  # version folders this sender wrote

    def _version_dir(self, version: int) -> str:
        return os.path.join(self.folder, f"v{version}")

    def send(self, index: int, buffer: torch.Tensor, version: int) -> str:
        from safetensors.torch import save_file

        path = os.path.join(self._version_dir(version), f"bucket_{index}.safetensors")
        atomic_write(path, lambda tmp: save_file({"data": buffer.cpu()}, tmp))
        return path

    def finish(self, manifest: dict) -> None:
        version = manifest["version"]
        folder = self._version_dir(version)
        atomic_write_text(os.path.join(folder, "manifest.json"), json.dumps(manifest, indent=2))
        fsync_dir(folder)
        for old in self._written - {version}:
            shutil.rmtree(self._version_dir(old), ignore_errors=True)
        self._written = {version}

    def release(self, version: int) -> None:
        pass

    def handles(self, manifest: dict | None, buckets: list[int]) -> list:
        paths = super().handles(manifest, buckets)
        self._check_files(paths, buckets)
        return paths

    @staticmethod
    def _check_files(paths: list[str], sizes: list[int]) -> None:
        """Every file there, complete, of the planned size, before anything is yielded."""
        from safetensors import safe_open

        folder = os.path.dirname(paths[0]) if paths else None
        if folder is not None and not os.path.isfile(os.path.join(folder, "manifest.json")):
            raise WeightSyncError(f"weight sync (disk): {folder} has no manifest.json (push not finished)")
        for path, size in zip(paths, sizes):
            if not os.path.isfile(path):
                raise WeightSyncError(f"weight sync (disk): bucket file {path} is missing")
            try:
                with safe_open(path, framework="pt") as f:
                    shape = f.get_slice("data").get_shape()
            except Exception as e:
                raise WeightSyncError(f"weight sync (disk): bucket file {path} is torn or corrupt: {e}") from e
            if shape != [size]:
                raise WeightSyncError(f"weight sync (disk): bucket file {path} holds {shape} bytes, "
                                      f"expected {[size]}")

    def receive(self, index: int, handles: list, nbytes: int, device: torch.device) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(handles[index], framework="pt") as f:
            return f.get_tensor("data")


TRANSPORTS = {"broadcast": Broadcast, "ipc": ObjectStore, "disk": Disk}
METHODS = tuple(TRANSPORTS)


def _transport(method: str, group, folder, sending: bool):
    if method not in TRANSPORTS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return TRANSPORTS[method](group=group, folder=folder, sending=sending)


class WeightSender:
    """Trainer rank 0's end: `push(named tensors, version)` -> manifest."""

    def __init__(self, method: str, metas: list[TensorMeta], bucket_bytes: int,
                 group: BroadcastGroup | None = None, folder: str | None = None, verify: bool = True):
        self.transport = _transport(method, group, folder, sending=True)
        self.method, self.metas, self.group, self.verify = method, list(metas), group, verify
        self.buckets = plan_buckets(self.metas, bucket_bytes)

    def push(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> dict:
        """Send the tensors (in metas order) bucket by bucket; returns the manifest."""
        source = iter(named_tensors)
        hasher = Hasher() if self.verify else None
        handles = []
        for i, bucket in enumerate(self.buckets):
            metas = [self.metas[j] for j in bucket]
            buffer = pack([self._take(source, meta) for meta in metas])
            if hasher is not None:
                hasher.add_bucket(metas, buffer)
            handles.append(self.transport.send(i, buffer, version))
            del buffer
        extra = next(source, None)
        if extra is not None:
            raise WeightSyncError(f"weight sync: got more tensors than the {len(self.metas)} planned, "
                                  f"starting with {extra[0]!r}")
        manifest = {"method": self.method, "version": version, "buckets": len(self.buckets),
                    "bytes": sum(m.nbytes for m in self.metas),
                    "checksum": hasher.hexdigest() if hasher is not None else None, "handles": handles}
        self.transport.finish(manifest)
        return manifest

    def release(self, version: int) -> None:
        """Drop the buffers (ipc) kept for `version`: call once every receiver pulled it."""
        self.transport.release(version)

    def close(self) -> None:
        self.transport.close()

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
    """An engine's end: `pull(manifest)` yields (name, tensor) in meta order, bucket by bucket."""

    def __init__(self, method: str, metas: list[TensorMeta], bucket_bytes: int,
                 group: BroadcastGroup | None = None, device: str = "cpu", verify: bool = True):
        self.transport = _transport(method, group, None, sending=False)
        self.method, self.metas, self.group, self.verify = method, list(metas), group, verify
        self.device = torch.device(device)
        self.buckets = plan_buckets(self.metas, bucket_bytes)
        self.last_checksum: str | None = None

    def pull(self, manifest: dict | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, tensor) in metas order, receiving one bucket at a time as consumed.

        The manifest (and, for disk, every bucket file) is checked here, before the
        first tensor is asked for."""
        sizes = [sum(self.metas[j].nbytes for j in bucket) for bucket in self.buckets]
        handles = self.transport.handles(manifest, sizes)
        self.last_checksum = None
        return self._tensors(handles, sizes)

    def close(self) -> None:
        self.transport.close()

    def _tensors(self, handles, sizes: list[int]) -> Iterator[tuple[str, torch.Tensor]]:
        hasher = Hasher() if self.verify else None
        for i, bucket in enumerate(self.buckets):
            metas = [self.metas[j] for j in bucket]
            buffer = self.transport.receive(i, handles, sizes[i], self.device).to(self.device)
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
