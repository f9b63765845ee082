"""The weights as buckets of bytes: what both ends of a weight sync compute the same way.

Both sides compute the same list of `TensorMeta` once at setup (names, shapes, dtypes in
the order the trainer yields its state), and from it the same bucket plan (`plan_buckets`:
consecutive tensors, at most `bucket_bytes` per bucket). A sync then moves the weights
bucket by bucket: the sender `pack`s each bucket into one flat uint8 buffer (any dtype,
bfloat16 included, goes as raw bytes), the receiver `unpack`s it into (name, tensor) views.
No bucket sizes, names or offsets travel: both sides already know them.

Weight sync checks itself: both sides checksum (CRC-32, chained) every tensor's name,
dtype, shape and bytes in order (a check against corruption in transit, not tampering;
blake2b was 0.19 s per side for 152 MB on the 2-core CPU, CRC-32 0.05 s).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Iterable

import torch


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


class Hasher:
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
    hasher = Hasher()
    for name, t in named_tensors:
        hasher.add(TensorMeta(name, tuple(t.shape), dtype_name(t.dtype)), _flat_bytes(t).cpu().numpy())
    return hasher.hexdigest()
