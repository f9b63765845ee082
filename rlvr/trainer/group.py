"""The trainer ranks as one group: one Ray actor per rank in a placement group, one
torch.distributed group among them (`rlvr.trainer.worker`).

Every method is a collective: it splits the samples over the ranks (contiguous shards, so
a prompt's completions stay together), calls all ranks at once and waits with a deadline
(`rlvr.cluster.remote.wait_all`: a rank that dies fails the call at once instead of leaving
the others in a collective until gloo/NCCL time out). All ranks run the same number of
micro-batches (the collectives meet).

Recovery (`trainer.max_restarts`): `lost(error)` says whether a failed call lost a rank and
a restart is left; `restart()` kills every rank and starts the group again in the same
bundles, from the model it started from; the loop then loads the latest checkpoint
(`rlvr.loop.loop`).
"""

from __future__ import annotations

import time

from rlvr import algos
from rlvr.cluster.env import omp_env
from rlvr.cluster.logs import actor_class
from rlvr.cluster.remote import RemoteCallError, actor_died, dead, places, wait_all
from rlvr.trainer.batch import num_micro_batches, shard_for_ranks
from rlvr.types import TrainSample


class TrainerGroup:
    """`cfg`: the `trainer` section; `algo`: `algorithm`; `pg`: a placement group with one bundle
    per rank (made for these ranks alone when None); `lora`: `model.lora` (rank > 0: LoRA)."""

    role = "trainer"  # the ranks' name in logs and errors

    def __init__(self, cfg, algo, model_path: str, seed: int, *, pg=None, runtime_env: dict | None = None,
                 temperature: float = 1.0, norm_tokens: int | None = None, lora=None, teacher: str | None = None,
                 timeout_s: float = 1800.0, worker_options: dict | None = None, wait: bool = True):
        from rlvr.cluster.placement import bundles, create_placement_group

        self.cfg, self.algo, self.model_path, self.seed, self.timeout_s = cfg, algo, model_path, seed, timeout_s
        self.options = {"temperature": temperature, "norm_tokens": norm_tokens, "lora": lora, "teacher": teacher,
                        **(worker_options or {})}
        self.runtime_env = dict(runtime_env or {})
        self.runtime_env["env_vars"] = {**omp_env(cfg.num_threads), **self.runtime_env.get("env_vars", {})}
        self._own_pg = pg is None
        self.pg = pg if pg is not None else create_placement_group(bundles(cfg))
        self.restarts = 0
        # `wait=False`: the ranks set up in the background until `wait_started` (see RolloutGroup)
        self._ranks, self._starting = self._launch()
        if wait:
            self.wait_started()

    def _launch(self) -> tuple[list, list]:
        """The rank actors and their `setup` calls (rank 0's rendezvous address goes to every rank's
        setup as an object ref: Ray passes it on once rank 0 answers, the driver does not wait)."""
        import ray

        from rlvr.cluster.placement import in_bundle

        actor_cls = ray.remote(actor_class(self.worker_class(), self.role))
        ranks = [actor_cls.options(num_cpus=self.cfg.cpus_per_worker, num_gpus=self.cfg.gpus_per_worker,
                                   resources=dict(self.cfg.resources), runtime_env=self.runtime_env,
                                   **in_bundle(self.pg, rank))
                 .remote(rank, self.cfg.num_workers, self.cfg, self.algo, self.seed, **self.options)
                 for rank in range(self.cfg.num_workers)]
        address = ranks[0].rendezvous_address.remote()
        return ranks, [w.setup.remote(address, self.model_path) for w in ranks]

    def _start(self) -> list:
        ranks, starting = self._launch()
        wait_all(starting, f"setting up the {self.role} ranks", self.timeout_s)
        return ranks

    def wait_started(self) -> None:
        """Wait until every rank has joined the group and loaded the model."""
        starting, self._starting = self._starting, []
        wait_all(starting, f"setting up the {self.role} ranks", self.timeout_s)

    @staticmethod
    def worker_class():
        """The rank's class (`rlvr.trainer.critic.CriticGroup`: the critic's)."""
        from rlvr.trainer.worker import TrainerWorker

        return TrainerWorker

    @property
    def handles(self) -> list:
        return list(self._ranks)

    def _all(self, method: str, per_rank: list[tuple], what: str | None = None) -> list:
        """Call `method` on every rank at once (rank r with `per_rank[r]`) and wait for all."""
        refs = [getattr(w, method).remote(*args) for w, args in zip(self._ranks, per_rank)]
        return wait_all(refs, what or f"{method} on the trainer ranks", self.timeout_s)

    def _num_micro(self, shards: list[list[TrainSample]]) -> int:
        cfg = self.cfg
        return num_micro_batches(shards, cfg.micro_batch_size, cfg.max_tokens_per_micro, cfg.pack_sequences)

    def _per_sample(self, method: str, samples: list[TrainSample]) -> list:
        """A collective per-sample call (`kl_to_reference`, `probe_logprobs`); results in sample order."""
        shards = shard_for_ranks(samples, len(self._ranks))
        micro = self._num_micro(shards)
        parts = self._all(method, [(s, micro) for s in shards])
        return [x for part in parts for x in part]  # shard_for_ranks splits into contiguous shards

    # ------------------------------------------------------------------ training

    def train(self, samples: list[TrainSample]) -> dict:
        """One update on all ranks at once (`trainer.updates_per_step` optimizer steps); a step
        with nothing to learn from trains nothing. Every micro-batch on every rank divides by
        the whole batch's normaliser, so the gradients add up to the full-batch gradient."""
        if not samples:
            return {"loss": 0.0, "grad_norm": 0.0}
        shards = shard_for_ranks(samples, len(self._ranks))
        denominator = algos.normaliser([s.num_loss_tokens for s in samples], self.algo.aggregation)
        micro = self._num_micro(shards)
        stats = reduce_train_stats(self._all("train_step", [(s, denominator, micro) for s in shards]))
        # each mini-batch's loss is divided by denominator / updates_per_step: their sum is updates_per_step x the
        # batch's loss (as the critic's value loss)
        return {**stats, "loss": stats["loss"] / self.cfg.updates_per_step}

    def reference_kl(self, samples: list[TrainSample]) -> list[float]:
        """Per-sample KL(policy || reference) summed over the completion, in sample order."""
        return self._per_sample("kl_to_reference", samples)

    def probe_logprobs(self, samples: list[TrainSample]) -> list[list[float]]:
        """The current weights' log-probs of each sample's completion tokens (the sync probe)."""
        return self._per_sample("probe_logprobs", samples)

    # ------------------------------------------------------------------ state

    def notices(self) -> list[str]:
        """Rank 0's setup notes (`TrainerWorker.notices`)."""
        return self._all("notices", [()] * len(self._ranks))[0]

    def save_checkpoint(self, path: str, run_state: dict, files: dict[str, str] | None = None, parts=()) -> str:
        """Every rank writes its part into `<path>.tmp` (and so do the groups in `parts`: the
        critic); rank 0 seals it with `run_state` (and `files`, name -> text) into `rlvr_state.json`
        and a manifest, then renames it to `path`."""
        tmp = f"{path}.tmp"
        self.write_into(tmp)
        for group in parts:
            group.write_into(tmp)
        return wait_all([self._ranks[0].finalize_checkpoint.remote(tmp, path, run_state, files)],
                        "sealing the checkpoint", self.timeout_s)[0]

    def write_into(self, folder: str) -> None:
        """Collective: every rank writes its part of a checkpoint into `folder` (not sealed)."""
        self._all("save_checkpoint", [(folder,)] * len(self._ranks))

    def load_checkpoint(self, path: str) -> dict:
        """Restore every rank from a checkpoint; returns its run state (step, sampler, ...)."""
        import json
        import os

        self._all("load_checkpoint", [(path,)] * len(self._ranks))
        with open(os.path.join(path, "rlvr_state.json")) as f:
            return json.load(f)

    def full_state_dict(self) -> dict:
        """The full HF-named weights (gathered from every rank; with LoRA, merged)."""
        return self._all("full_state_dict", [()] * len(self._ranks))[0]

    # ------------------------------------------------------------------ weight sync (rlvr.sync.group)

    def weight_metas(self, adapter: bool) -> list:
        return self._all("weight_metas", [(adapter,)] * len(self._ranks))[0]

    def adapter_config(self) -> dict:
        return wait_all([self._ranks[0].adapter_config.remote()], "adapter_config", self.timeout_s)[0]

    def rendezvous_address(self) -> tuple[str, int]:
        return wait_all([self._ranks[0].rendezvous_address.remote()], "rendezvous_address", self.timeout_s)[0]

    def join_ref(self, method: str, metas: list, bucket_bytes: int, **kwargs):
        """Rank 0 joins the sending end of a weight sync (see `rlvr.sync.group`)."""
        return self._ranks[0].join_sync_group.remote(method, metas, bucket_bytes, **kwargs)

    def push_refs(self, version: int) -> list:
        """Every rank takes part in gathering the weights; rank 0 sends them (its result: the manifest)."""
        return [w.push_weights.remote(version) for w in self._ranks]

    def release_ref(self, version: int):
        return self._ranks[0].release_weights.remote(version)

    # ------------------------------------------------------------------ recovery

    def lost(self, error: BaseException) -> bool:
        """Whether `error` (a failed call of this group) lost a rank and `trainer.max_restarts` allows
        starting the group again."""
        if not isinstance(error, RemoteCallError) or self.restarts >= self.cfg.max_restarts:
            return False
        return actor_died(error) or bool(dead(self._ranks))

    def restart(self) -> None:
        """Kill every rank and start the group again in the same bundles (`faults/trainer_restarts`)."""
        import ray

        t0 = time.perf_counter()
        self.restarts += 1
        print(f"[rlvr] fault: a {self.role} rank died; starting the {len(self._ranks)} ranks again "
              f"(restart {self.restarts} of trainer.max_restarts={self.cfg.max_restarts})", flush=True)
        for w in self._ranks:
            ray.kill(w)
        self._ranks = self._start()
        print(f"[rlvr] fault: {self.role} ranks started again in {time.perf_counter() - t0:.1f} s", flush=True)

    def places(self) -> list[dict]:
        return places(self._ranks)

    def stop(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for w in self._ranks:
            ray.kill(w)
        if self._own_pg:
            remove_placement_group(self.pg)


def reduce_train_stats(results: list[dict]) -> dict:
    """Combine per-rank train stats: sums for the loss, token-weighted means for the rest."""
    tokens = sum(r["tokens"] for r in results) or 1.0

    def mean(key: str) -> float:
        return sum(r.get(key, 0.0) for r in results) / tokens

    out = {
        "loss": sum(r["loss"] for r in results),
        "grad_norm": results[0]["grad_norm"],
        "lr": results[0]["lr"],
        "tokens/trained": tokens,
        "train/logprob_diff": mean("logprob_diff_sum"),  # |engine - trainer| log-prob per token
        "train/entropy": mean("entropy_sum"),
        "train/kl": mean("kl_sum"),
        "train/clip_fraction": mean("clip_fraction_sum"),
        "train/approx_kl": mean("approx_kl_sum"),
        "train/worker_s": max(r.get("time", 0.0) for r in results),  # inside the ranks (the rest: Ray calls)
    }
    if any("compile_s" in r for r in results):  # trainer.compile: seconds compiling so far (slowest rank)
        out["train/compile_s"] = max(r.get("compile_s", 0.0) for r in results)
    if any("reverse_kl_sum" in r for r in results):  # distillation: KL(student || teacher) per sampled token
        out["distill/reverse_kl"] = mean("reverse_kl_sum")
    if any("gate_weight_sum" in r for r in results):  # SAPO: mean gradient weight of its soft gate
        out["train/gate_weight"] = mean("gate_weight_sum")
    if any("correction_seqs" in r for r in results):  # algorithm.correction (tis, mis_token, mis_seq, icepop)
        seqs = sum(r.get("correction_seqs", 0.0) for r in results) or 1.0
        out.update({
            "train/correction/masked_tokens": mean("correction_masked_tokens"),  # fraction of valid tokens
            "train/correction/masked_seqs": sum(r.get("correction_masked_seqs", 0.0) for r in results) / seqs,
            "train/correction/weight_mean": mean("correction_weight_sum"),  # over valid tokens, masked ones as 0
            "train/correction/weight_max": max(r.get("correction_weight_max", 0.0) for r in results),
        })
    return out
