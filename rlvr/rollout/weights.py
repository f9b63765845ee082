"""The engine side of weight sync, shared by every engine class (a mixin).

An engine class provides `_load_weights(named_tensors)`: consume an iterator of
HF-named full tensors and load them into the live model (vLLM: its layer-wise
reload; transformers: copy into the parameters). Everything else is here:

    engine.update_weights(state, version)          # a whole state dict handed over (tests, simple paths)
    engine.join_sync_group(method, metas, bucket_bytes, host, port, rank, world_size, backend)
    engine.receive_weights(manifest, version)      # one sync through the transport (`rlvr.weight_sync`)
    engine.weight_version(); engine.sleep(); engine.wake_up()

`receive_weights` streams: the transport yields tensors bucket by bucket while the
engine loads them, so an engine holds about one bucket beyond its own weights.
"""

from __future__ import annotations

import time


class WeightSyncMixin:
    _version = 0
    _receiver = None

    def _load_weights(self, named_tensors) -> None:  # pragma: no cover - each engine implements it
        raise NotImplementedError

    def update_weights(self, state: dict, version: int) -> float:
        """Load full HF-named weights from a dict; return seconds taken."""
        start = time.perf_counter()
        self._load_weights(iter(state.items()))
        self._version = version
        return time.perf_counter() - start

    def join_sync_group(self, method: str, metas: list, bucket_bytes: int, host: str | None = None,
                        port: int | None = None, rank: int | None = None, world_size: int | None = None,
                        backend: str = "gloo", verify: bool = True) -> bool:
        """Set up this engine's receiving end; collective with the trainer for `broadcast`."""
        from rlvr.weight_sync import BroadcastGroup, WeightReceiver

        if self._receiver is not None and self._receiver.group is not None:
            self._receiver.group.close()  # joining again (a new method or group) replaces the old one
        group = None
        if method == "broadcast":
            group = BroadcastGroup(host, port, rank, world_size, backend=backend, device=self._sync_device())
        self._receiver = WeightReceiver(method, metas, bucket_bytes, group=group, device=self._sync_device(),
                                        verify=verify)
        return True

    def receive_weights(self, manifest: dict | None, version: int) -> dict:
        """Receive and load one version of the weights; returns seconds and the checksum of
        what arrived (compared with the sender's when `sync.verify` is on)."""
        start = time.perf_counter()
        self._load_weights(self._receiver.pull(manifest))
        self._version = version
        return {"seconds": time.perf_counter() - start, "checksum": self._receiver.last_checksum}

    def weight_version(self) -> int:
        return self._version

    def sleep(self) -> bool:
        """Free accelerator memory while the trainer steps (colocate). No-op where there is none."""
        return False

    def wake_up(self) -> bool:
        return False

    def _sync_device(self) -> str:
        return "cpu"
