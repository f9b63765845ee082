"""The `sync` section: how trainer rank 0's weights reach the engines, and how that is checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from rlvr.config.checks import require

Method = Literal["broadcast", "ipc", "disk"]  # the keys of rlvr.sync.transport.TRANSPORTS


@dataclass
class SyncConfig:
    method: Method = "broadcast"  # broadcast (process group) | ipc (shared memory / CUDA IPC) | disk (safetensors)
    bucket_mb: float = 64.0  # broadcast/ipc/disk buckets: peak extra memory is about one bucket
    dir: Optional[str] = None  # disk: a folder every node can read (default: <run>/sync)
    verify: Literal["off", "every_n", "always"] = "every_n"  # compare engine and trainer log-probs on probe samples
    verify_every: int = 20  # every_n: check at this many syncs (and the first)
    verify_tol: float = 1e-3  # max |engine - trainer| log-prob on the probe (fp32; raise for bf16)

    def check(self) -> None:
        require(self.bucket_mb > 0, "sync.bucket_mb", "must be > 0")
        require(self.verify_every >= 1, "sync.verify_every", "must be >= 1")
        require(self.verify_tol > 0, "sync.verify_tol", "must be > 0")

    def verify_due(self, version: int) -> bool:
        """`sync.verify`: always, never, or at the first sync and every `verify_every` syncs.

        >>> [v for v in range(1, 8) if SyncConfig(verify="every_n", verify_every=3).verify_due(v)]
        [1, 3, 6]
        """
        return self.verify == "always" or (self.verify == "every_n" and (version == 1 or version % self.verify_every == 0))
