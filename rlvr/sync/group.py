"""Weight sync as one object: trainer rank 0's weights into every engine (`sync.*` keys).

    sync = WeightSync(cfg.sync, trainer, rollouts, folder, adapter=..., nccl=...)
    sync.setup()                     # every engine joins rank 0's sending end
    stats = sync.push(version)       # gather on the ranks, send, load; checksums compared
    diff = sync.verify(probe)        # engines' log-probs == the trainer's on probe samples

The transports (`broadcast`, `ipc`, `disk`) sit in `rlvr.sync.transport.TRANSPORTS`; what
the driver needs to know of one is whether its two ends meet in a collective (`collective`:
start both at once) or the engines read what rank 0 wrote (pushed first, then pulled) and
whether rank 0 keeps buffers until the engines have them (`keeps_buffers`).

What is sent is fixed at `setup`: full weights, or with `model.lora.sync` resolving to
"adapter" the LoRA adapter alone. `version` counts syncs; every completion records the
version that generated it.

Recovery: an engine that dies during a push is replaced, every engine joins a new group
(a broken broadcast group fails at once for all its members), and the same version is
pushed again; an engine replaced while it generated is brought to the current version
(`RolloutGroup.after_replace`). Both happen under the rollout group's lock, so a
replacement never overlaps a sync.
"""

from __future__ import annotations

import os

from rlvr.cluster.remote import RemoteCallError, wait_all
from rlvr.sync.tensors import WeightSyncError
from rlvr.sync.transport import TRANSPORTS
from rlvr.types import SamplingSpec, TrainSample


class WeightSync:
    """`cfg`: the `sync` section; `folder`: where disk buckets and served adapters go;
    `adapter`: syncs carry the LoRA adapter alone; `nccl`: trainer and engines on GPUs;
    `temperature`: the rollouts' (the probe samples as training does)."""

    def __init__(self, cfg, trainer, rollouts, folder: str, *, adapter: bool = False, nccl: bool = False,
                 temperature: float = 1.0, timeout_s: float = 1800.0):
        self.cfg, self.trainer, self.rollouts, self.temperature = cfg, trainer, rollouts, temperature
        self.folder, self.adapter, self.nccl, self.timeout_s = os.path.abspath(folder), adapter, nccl, timeout_s
        self.transport = TRANSPORTS[cfg.method]
        self.version = 0  # the weights the engines hold
        self.lock = rollouts.lock
        rollouts.after_replace = self._bring_up

    def setup(self) -> None:
        """Rank 0 and every engine join the transport (a broadcast group is built whole, so this
        runs again whenever an engine or the trainer ranks are replaced)."""
        with self.lock:
            metas = self.trainer.weight_metas(self.adapter)
            common = {"verify": self.cfg.verify != "off"}  # checksums on both ends
            peft = self.trainer.adapter_config() if self.adapter else None  # engines serve it with this config
            engines = [{**common, "adapter": peft, "adapter_dir": os.path.join(self.folder, f"adapter-engine{i}")}
                       for i in range(len(self.rollouts.handles))]
            sender = {**common, "adapter": self.adapter, "folder": self.folder}
            if self.transport.collective:  # a process group of rank 0 + the engines, on a fresh port
                host, port = self.trainer.rendezvous_address()
                world, backend = 1 + len(engines), "nccl" if self.nccl else "gloo"
                sender.update(host=host, port=port, world_size=world, backend=backend)
                engines = [{**kw, "host": host, "port": port, "rank": i + 1, "world_size": world, "backend": backend}
                           for i, kw in enumerate(engines)]
            bucket = int(self.cfg.bucket_mb * 2**20)
            refs = ([self.trainer.join_ref(self.cfg.method, metas, bucket, **sender)]
                    + self.rollouts.join_refs(self.cfg.method, metas, bucket, engines))
            wait_all(refs, f"joining the {self.cfg.method} weight-sync group", self.timeout_s)

    def push(self, version: int) -> dict:
        """The trainer's weights into every engine as `version`; metrics of the sync. An engine
        that dies during it is replaced and gets this version (see the module doc)."""
        with self.lock:
            try:
                stats = self._push(version)
            except RemoteCallError as e:
                lost = self.rollouts.dead()
                if not lost:
                    raise
                for i in lost:
                    self.rollouts.replace(i, e, bring_up=False)
                self.setup()
                stats = self._push(version)
            self.version = version
            return stats

    def _push(self, version: int) -> dict:
        what = f"weight sync ({self.cfg.method}, version {version})"
        pushes, pulls = self.trainer.push_refs(version), []
        try:
            if self.transport.collective:  # senders and receivers meet in the collective
                pulls = self.rollouts.receive_refs(None, version)
                results = wait_all(pushes + pulls, what, self.timeout_s)
                manifest, received = results[0], results[len(pushes):]
            else:  # the engines read what rank 0 wrote (files, shared memory, IPC handles)
                manifest = wait_all(pushes[:1], what, self.timeout_s)[0]
                pulls = self.rollouts.receive_refs(manifest, version)
                received = wait_all(pulls + pushes[1:], what, self.timeout_s)[: len(pulls)]
        except RemoteCallError:
            _settle(pushes + pulls)  # nothing of this sync still running
            raise
        if self.transport.keeps_buffers:
            wait_all([self.trainer.release_ref(version)], what, self.timeout_s)
        for i, got in enumerate(received):
            if manifest["checksum"] is not None and got["checksum"] != manifest["checksum"]:
                raise WeightSyncError(f"engine {i} received different bytes than trainer rank 0 sent for weight "
                                      f"version {version} (sync.method={self.cfg.method})")
        return {"sync/bytes": manifest["bytes"], "sync/buckets": manifest["buckets"],
                "sync/engine_load_s": max(got["seconds"] for got in received)}

    def _bring_up(self, index: int) -> None:
        """A replaced engine (`index`) joins the sync and gets the current version."""
        with self.lock:
            self.setup()
            if self.version:
                self._push(self.version)

    def verify(self, probe_prompts) -> float:
        """Each engine samples a few probe completions; the trainer scores the same tokens. Equal
        weights give equal log-probs: a difference above `sync.verify_tol` means an engine is not
        running the trainer's weights (WeightSyncError). Returns the largest difference."""
        spec = SamplingSpec(n=1, max_tokens=8, temperature=self.temperature, seed=self.version)
        worst = 0.0
        for i, completions in enumerate(self.rollouts.generate_each([p.token_ids for p in probe_prompts], spec)):
            samples = [TrainSample(probe_prompts[c.prompt_index].token_ids, c.token_ids, 0.0, c.logprobs)
                       for c in completions if c.token_ids]
            trainer_logprobs = self.trainer.probe_logprobs(samples)
            diff = max((abs(a - b) for s, lp in zip(samples, trainer_logprobs) for a, b in zip(s.rollout_logprobs, lp)),
                       default=0.0)
            if diff > self.cfg.verify_tol:
                raise WeightSyncError(f"engine {i} is not running the trainer's weights (version {self.version}): "
                                      f"its log-probs differ from the trainer's by up to {diff:.3g} (> sync.verify_tol="
                                      f"{self.cfg.verify_tol:g})")
            worst = max(worst, diff)
        return worst


def _settle(refs: list, timeout_s: float = 60.0) -> None:
    """Wait (a bounded time) for the calls of a failed sync to end, whatever their outcome:
    a broken group makes them fail at once, and a new group must not start beside them."""
    import ray

    ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
