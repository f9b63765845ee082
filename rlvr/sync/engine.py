"""The engine side of weight sync, shared by every engine class (a mixin).

An engine class provides `_load_weights(named_tensors)`: consume an iterator of
HF-named full tensors and load them into the live model (vLLM: its layer-wise
reload; transformers: copy into the parameters). Everything else is here:

    engine.update_weights(state, version)          # a whole state dict handed over (tests, simple paths)
    engine.join_sync_group(method, metas, bucket_bytes, host, port, rank, world_size, backend)
    engine.receive_weights(manifest, version)      # one sync through the transport (`rlvr.sync.transport`)
    engine.weight_version(); engine.sleep(); engine.wake_up()

`receive_weights` streams: the transport yields tensors bucket by bucket while the
engine loads them, so an engine holds about one bucket beyond its own weights.

LoRA adapter-only sync (`model.lora.sync`, `rlvr.trainer.lora`): `join_sync_group(...,
adapter=<adapter_config.json dict>)` makes every later sync carry the adapter tensors
alone (PEFT names), which `_load_adapter` serves as a LoRA adapter; an engine class
without one (the HF engine) refuses that mode.
"""

from __future__ import annotations

import time


class WeightSyncMixin:
    _version = 0
    _receiver = None
    _adapter = None  # the adapter_config.json dict while syncs carry a LoRA adapter alone
    _adapter_dir = None

    def _load_weights(self, named_tensors) -> None:  # pragma: no cover - each engine implements it
        raise NotImplementedError

    def _check_adapter_support(self) -> None:
        """Raise unless this engine can serve a LoRA adapter (`_load_adapter`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot serve a LoRA adapter: use model.lora.sync=merged")

    def _load_adapter(self, named_tensors, config: dict) -> None:  # pragma: no cover - engines that can
        raise NotImplementedError

    def update_weights(self, state: dict, version: int) -> float:
        """Load full HF-named weights from a dict; return seconds taken."""
        start = time.perf_counter()
        self._load_weights(iter(state.items()))
        self._version = version
        return time.perf_counter() - start

    def join_sync_group(self, method: str, metas: list, bucket_bytes: int, host: str | None = None,
                        port: int | None = None, rank: int | None = None, world_size: int | None = None,
                        backend: str = "gloo", verify: bool = True, adapter: dict | None = None,
                        adapter_dir: str | None = None) -> bool:
        """Set up this engine's receiving end; collective with the trainer for `broadcast`.
        `adapter`: syncs carry the LoRA adapter with this PEFT config, not full weights; the
        engine keeps the adapter it serves in `adapter_dir` (default: a temporary folder)."""
        from rlvr.sync.transport import BroadcastGroup, WeightReceiver

        if adapter is not None:
            self._check_adapter_support()  # refuse at setup, not half way through the first sync
        self._adapter, self._adapter_dir = adapter, adapter_dir or self._adapter_dir
        if self._receiver is not None:
            self._receiver.close()  # joining again (a new method or group) replaces the old one
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
        if self._adapter is not None:
            self._load_adapter(self._receiver.pull(manifest), self._adapter)
        else:
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
