"""One trainer rank: a Ray actor in a torch.distributed group (gloo on CPU, NCCL on GPU).

`rlvr.trainer.group.TrainerGroup` creates `trainer.num_workers` of these in a placement
group, gives each its shard of the step's samples, and calls `train_step` on all of them
at once (the calls meet in the backend's collectives).

Loss scaling, so that sharding never changes the result: the group passes the
*global* normaliser of the batch (valid tokens for `token_mean`, sequences for
`seq_mean_token_mean`); every micro-batch divides by it, so summing micro-batch
gradients gives the full-batch gradient on each rank, and multiplying by the
world size undoes the backends' averaging over ranks.

LoRA (`lora.rank > 0`, see `rlvr.trainer.lora`): the model is wrapped with peft adapters
before the backend wraps it; the engines get merged full weights or the adapter tensors alone
(`model.lora.sync`), checkpoints the adapter, and the KL reference is the model with its
adapters disabled.
"""

from __future__ import annotations

import os
import time

from rlvr.config import AlgorithmConfig, LoRAConfig, TrainerConfig
from rlvr.trainer.batch import collate, collate_packed, collate_shared, split_by_tokens, split_micro
from rlvr.trainer.compile import compile_policy, compile_seconds
from rlvr.trainer.packed import packing_reason, use_varlen_attention
from rlvr.types import TrainSample


class TrainerWorker:
    sync_adapter = False  # rank 0, set by join_sync_group: pushes send the LoRA adapter alone

    def __init__(self, rank: int, world_size: int, cfg: TrainerConfig, algo: AlgorithmConfig, seed: int,
                 temperature: float = 1.0, norm_tokens: int | None = None, lora: LoRAConfig | None = None,
                 teacher: str | None = None):
        import torch

        torch.set_num_threads(cfg.num_threads)
        self.rank, self.world_size, self.cfg, self.algo, self.seed = rank, world_size, cfg, algo, seed
        self.lora = lora if lora is not None and lora.rank > 0 else None
        self.temperature = temperature  # the rollout's: log-probs must be of the distribution sampled from
        self.norm_tokens = algo.norm_tokens or norm_tokens  # seq_mean_token_sum_norm's constant
        self.teacher_path = teacher if algo.distill_coef else None  # on-policy distillation's teacher

    def rendezvous_address(self) -> tuple[str, int]:
        """This node's IP and a free port on it (asked of rank 0 to set up the group)."""
        import ray

        from rlvr.cluster.env import free_port

        return ray.util.get_node_ip_address(), free_port()

    def setup(self, address: tuple[str, int], model_path: str) -> int:
        """Collective: join the process group at rank 0's `address` (`rendezvous_address`), load the
        model, wrap it in the backend."""
        import torch
        import torch.distributed as dist

        cfg = self.cfg
        master_addr, master_port = address
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
        self.device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=self.rank, world_size=self.world_size)
        torch.manual_seed(self.seed)

        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = self._pretrained(model_path).to(self.device)
        if cfg.gradient_checkpointing:  # non-reentrant: the frozen LoRA base gives its inputs no grad
            model.gradient_checkpointing_enable({"use_reentrant": False} if self.lora else None)
        model.config.use_cache = False
        self.hf_model = model  # the transformers model (under LoRA/backend wrappers): its saved weight layout
        self.peft_model, self.lora_specs = None, None
        if self.lora:
            from rlvr.trainer import lora

            model = self.peft_model = lora.wrap(model, self.lora)
            self.lora_specs = lora.merge_specs(model)
        self.notes: list[str] = []  # what the user should know about this setup (`notices`)
        self.pack = cfg.pack_sequences and self._packable(model)
        if cfg.compile != "off":  # rejected with LoRA by the recipe checks
            self.notes += compile_policy(model, cfg.compile, packed=self.pack)
        # the shared-prompt layout runs prompts with the KV cache on, which HF's gradient checkpointing turns
        # off; packed, prompts are shared inside the row (rlvr.trainer.batch.collate_packed)
        self.share_prompts = cfg.share_prompts and not cfg.gradient_checkpointing and not self.pack
        self.pack_shared = self.pack and cfg.share_prompts and use_varlen_attention(model)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        from rlvr.trainer.backends import BACKENDS

        total_updates = cfg.total_steps * cfg.updates_per_step
        self.backend = BACKENDS[cfg.backend](model, cfg, self.device, self.world_size, total_updates)
        self.model_path = model_path
        self.fused = self._fused_logprobs(model)
        self.ref_model = None
        if self.algo.kl.coef > 0 and not self.lora:  # a frozen copy of the starting policy on every rank
            self.ref_model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(self.device)
            self.ref_model.eval().requires_grad_(False)
            if self.pack:
                use_varlen_attention(self.ref_model)
        self.teacher = self._load_teacher(tokenizer) if self.teacher_path else None
        return self.rank

    def _packable(self, model) -> bool:
        """Whether the packed layout is exact for `model` (`rlvr.trainer.packed.packing_reason`); if
        not, padded micro-batches and a startup note saying why. Every rank decides alike (one model)."""
        reason = packing_reason(model)
        if reason:
            self.notes.append(f"trainer.pack_sequences: padded micro-batches instead: {reason}")
        return reason is None

    def _load_teacher(self, tokenizer):
        """The distillation teacher, frozen, on every rank (like the KL reference)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if AutoTokenizer.from_pretrained(self.teacher_path).get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"teacher.path {self.teacher_path}: its tokenizer differs from the student's "
                             "(distillation compares log-probs of the same token ids)")
        teacher = AutoModelForCausalLM.from_pretrained(self.teacher_path, dtype=torch.float32).to(self.device)
        if self.fused:
            from rlvr.trainer.heads import fused_head_reason

            reason = fused_head_reason(teacher)
            if reason:
                raise ValueError(f"teacher.path {self.teacher_path}: {reason}; set trainer.fused_logprobs=false")
        if self.pack:
            use_varlen_attention(teacher)  # the student's class and attention: packable too
        return teacher.eval().requires_grad_(False)

    def notices(self) -> list[str]:
        """What this rank's setup found that the user should know (printed once by the driver,
        `rlvr.loop.notices`)."""
        return list(self.notes)

    def _pretrained(self, model_path: str):
        """The model this rank trains, on the CPU (`rlvr.trainer.critic` loads a value model instead)."""
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)

    def ping(self) -> int:
        return self.rank

    # ------------------------------------------------------------------ training

    def _fused_logprobs(self, model) -> bool:
        """`trainer.fused_logprobs`, unless the model needs the logits path (printed once)."""
        if not self.cfg.fused_logprobs:
            return False
        from rlvr.trainer.heads import fused_head_reason

        reason = fused_head_reason(model)
        if reason:
            self.notes.append(f"trainer.fused_logprobs: falling back to full logits: {reason}")
        return reason is None

    def _token_stats(self, model, batch, entropy: bool = False, entropy_grad: bool = False):
        """(log-probs [B, T], entropy [B, T] or None) of the completion tokens under `model`:
        fused from the hidden states (`rlvr.trainer.heads`) or through the logits; entropy
        carries a gradient when `entropy_grad` (fused: always)."""
        from rlvr import algos

        if self.fused:
            from rlvr.trainer.heads import completion_logprobs

            return completion_logprobs(model, batch, self.device, self.temperature, entropy,
                                       self.cfg.logprob_chunk or None)
        logits = completion_logits(model, batch, self.device)
        logp = algos.token_logprobs(logits, batch["targets"].to(self.device), self.temperature)
        if not entropy:
            return logp, None
        fn = algos.entropy_from_logits if entropy_grad else algos.entropy_for_logging
        return logp, fn(logits, self.temperature)

    def _logprobs(self, batch):
        """Current-policy log-probs of the completion tokens, [B, T]."""
        return self._token_stats(self.backend.model, batch)[0]

    def _ref_logprobs(self, batch):
        import torch

        with torch.no_grad():
            if self.lora:  # the base model: the same weights with the adapters off
                with self.peft_model.disable_adapter():
                    return self._token_stats(self.backend.model, batch)[0]
            return self._token_stats(self.ref_model, batch)[0]

    def _micro_batches(self, samples: list[TrainSample], count: int):
        """Exactly `count` collated micro-batches (all ranks run the same count for the
        collectives); an empty one is a dummy row with an all-zero mask."""
        filler = samples[:1] or [TrainSample([self.pad_id], [], 0.0, [])]
        for micro in self._split(samples, count):
            batch = self._collate(micro or filler)
            if not micro:
                batch["completion_mask"] = batch["completion_mask"] * 0.0
            yield batch

    def _split(self, samples: list[TrainSample], count: int) -> list[list[TrainSample]]:
        """`count` micro-batches in order: balanced by tokens with `trainer.max_tokens_per_micro`,
        else by sample count."""
        if self.cfg.max_tokens_per_micro:
            return split_by_tokens(samples, count, self.pack)
        return split_micro(samples, count)

    def _collate(self, samples: list[TrainSample]):
        if self.pack:  # one forward per micro-batch on every rank, like the plain layout
            return collate_packed(samples, self.pad_id, share=self.pack_shared)
        # one layout on every rank: the forward's collective count depends on it (see collate_shared)
        shared = collate_shared(samples, self.pad_id, always=self.world_size > 1) if self.share_prompts else None
        return shared if shared is not None else collate(samples, self.pad_id)

    def train_step(self, samples: list[TrainSample], denominator: float, num_micro: int) -> dict[str, float]:
        """One RL step on this rank's shard: `updates_per_step` optimizer updates.

        `denominator` is the global loss normaliser of the whole step's batch and
        `num_micro` the micro-batches per update that every rank runs.
        """
        t0 = time.perf_counter()
        self.backend.model.train()
        minis = split_micro(samples, self.cfg.updates_per_step)
        old = self._old_logprobs(minis, num_micro) if self.cfg.updates_per_step > 1 else None
        totals: dict[str, float] = {"grad_norm": 0.0}
        for u, mini in enumerate(minis):
            for m, batch in enumerate(self._micro_batches(mini, num_micro)):
                old_logp = old[u][m].to(self.device) if old is not None else None
                loss, stats = self._micro_loss(batch, old_logp, denominator / self.cfg.updates_per_step)
                self.backend.backward(loss * self.world_size, last=(m == num_micro - 1))
                _add(totals, stats)
            totals["grad_norm"] += self.backend.step() / len(minis)
        totals["lr"] = self.backend.lr()
        if self.cfg.compile != "off" and (seconds := compile_seconds()) is not None:
            totals["compile_s"] = seconds  # so far, in this process
        totals["time"] = time.perf_counter() - t0
        return totals

    def _micro_loss(self, batch, old_logp, denominator: float):
        """The loss of one micro-batch (already divided by the global normaliser) and
        token-weighted sums of its statistics."""
        import torch

        from rlvr import algos

        a = self.algo
        mask = batch["completion_mask"].to(self.device)
        # entropy: a loss term with entropy_coef, else logged only
        logp, entropy = self._token_stats(self.backend.model, batch, entropy=True, entropy_grad=bool(a.entropy_coef))
        old_logp = logp.detach() if old_logp is None else old_logp
        rollout_logp = batch["rollout_logprobs"].to(self.device)
        advantages, distill = batch["advantages"].to(self.device), {}
        if self.teacher is not None:  # on-policy distillation: per-token reverse-KL advantages
            with torch.no_grad():
                teacher_logp = self._token_stats(self.teacher, batch)[0]
            advantages = algos.distill_advantages(advantages, teacher_logp, old_logp, coef=a.distill_coef,
                                                  reward_weight=a.reward_weight)
            distill = {"reverse_kl_sum": ((old_logp - teacher_logp) * mask).sum().item()}
        loss_tokens, metrics = algos.POLICY_LOSSES[a.loss](logp, old_logp, advantages, mask, **a.loss_options())
        correction = {}
        if a.correction_mode() != "none":
            weights, keep = algos.CORRECTIONS[a.correction_mode()](old_logp, rollout_logp, mask,
                                                                   **a.correction_options())
            loss_tokens = loss_tokens * weights
            correction = algos.correction_sums(weights, keep, mask)
        kl = torch.zeros_like(logp)
        if a.kl.coef and a.kl.where == "loss":
            kl = algos.KL[a.kl.estimator](logp, self._ref_logprobs(batch))
            loss_tokens = loss_tokens + a.kl.coef * kl
        if a.entropy_coef:
            loss_tokens = loss_tokens - a.entropy_coef * entropy
        loss = algos.aggregate(loss_tokens * mask, mask, a.aggregation, max_tokens=self.norm_tokens,
                               denominator=denominator)
        n = float(mask.sum())
        with torch.no_grad():
            sums = {"logprob_diff_sum": ((logp - rollout_logp).abs() * mask).sum().item(),
                    "entropy_sum": (entropy * mask).sum().item(), "kl_sum": (kl.detach() * mask).sum().item()}
        return loss, {"loss": loss.item(), "tokens": n, **sums, **correction, **distill,
                      **{f"{k}_sum": v * n for k, v in metrics.items()}}

    def kl_to_reference(self, samples: list[TrainSample], num_micro: int) -> list[float]:
        """Per-sample summed KL(policy || reference) over its completion (for `kl.where: reward`).
        Collective like train_step: every rank runs `num_micro` forwards."""
        import torch

        from rlvr import algos

        out: list[float] = []
        with torch.no_grad():
            for batch, micro in zip(self._micro_batches(samples, num_micro), self._split(samples, num_micro)):
                kl = algos.KL[self.algo.kl.estimator](self._logprobs(batch), self._ref_logprobs(batch))
                sums = (kl * batch["completion_mask"].to(self.device)).sum(-1)
                out += sums[: len(micro)].tolist()
        return out

    def _old_logprobs(self, minis, num_micro):
        import torch

        with torch.no_grad():
            return [[self._logprobs(batch).cpu() for batch in self._micro_batches(mini, num_micro)] for mini in minis]

    # ------------------------------------------------------------------ weights out

    def full_state_dict(self):
        """Collective: every rank must call it. Rank 0 returns HF-named CPU tensors (with LoRA:
        the merged weights, W + (B @ A) * scaling, computed without touching the model)."""
        from rlvr.trainer.saved_format import saved_format

        state = self.backend.full_state_dict(self.rank)
        if self.lora and state is not None:
            from rlvr.trainer.lora import merged_state_dict

            state = merged_state_dict(state, self.lora_specs)
        return saved_format(self.hf_model, state)  # e.g. MoE experts per expert, as vLLM loads them

    def backend_state_dict(self):
        """Collective: the full weights under the wrapped model's own names (rank 0; None
        elsewhere); with LoRA the base and adapter tensors, unmerged."""
        return self.backend.full_state_dict(self.rank)

    def sync_state_dict(self, adapter: bool = False):
        """Collective: what a sync sends (rank 0; None elsewhere): `full_state_dict`, or with
        `adapter` the LoRA adapter tensors alone, PEFT-named (`lora.adapter_state_dict`)."""
        if not adapter:
            return self.full_state_dict()
        if not self.lora:
            raise ValueError("adapter-only weight sync needs LoRA (model.lora.rank > 0)")
        from rlvr.trainer.lora import adapter_state_dict

        state = self.backend.full_state_dict(self.rank)
        return adapter_state_dict(state) if state is not None else None

    def adapter_config(self) -> dict:
        """The adapter's `adapter_config.json` as a dict (what an engine serving it needs)."""
        from rlvr.trainer.lora import adapter_config

        return adapter_config(self.peft_model)

    def weight_metas(self, adapter: bool = False) -> list | None:
        """Collective: names, shapes and dtypes of what every sync sends, in that order
        (rank 0; None elsewhere)."""
        from rlvr.sync.tensors import metas_of

        state = self.sync_state_dict(adapter)
        return metas_of(state.items()) if self.rank == 0 else None

    def join_sync_group(self, method: str, metas: list, bucket_bytes: int, host: str | None = None,
                        port: int | None = None, world_size: int | None = None, backend: str = "gloo",
                        folder: str | None = None, verify: bool = True, adapter: bool = False) -> bool:
        """Rank 0: the sending end of weight sync (rank 0 of the broadcast group); with
        `adapter`, every push sends the LoRA adapter alone (the other ranks take part in the same
        gather either way: both gather the full peft state)."""
        from rlvr.sync.transport import BroadcastGroup, WeightSender

        self.sync_adapter = adapter
        old = getattr(self, "sender", None)
        if old is not None:
            old.close()  # joining again replaces the old group (a broadcast group is shut down)
        group = None
        if method == "broadcast":
            # gloo moves host memory: a CUDA trainer would copy each bucket to the GPU and back
            device = self.device.type if backend == "nccl" else "cpu"
            group = BroadcastGroup(host, port, 0, world_size, backend=backend, device=device)
        self.sender = WeightSender(method, metas, bucket_bytes, group=group, folder=folder, verify=verify)
        return True

    def push_weights(self, version: int) -> dict | None:
        """Collective: gather the full weights and (rank 0) send them (or the adapter alone,
        see `join_sync_group`); returns the manifest."""
        state = self.sync_state_dict(self.sync_adapter)
        if self.rank != 0:
            return None
        return self.sender.push(iter(state.items()), version)

    def release_weights(self, version: int) -> None:
        """Rank 0: drop what the transport kept alive for the engines (ipc buffers)."""
        self.sender.release(version)

    def probe_logprobs(self, samples: list[TrainSample], num_micro: int) -> list[list[float]]:
        """Collective: this rank's samples' per-token log-probs under the current weights
        (compared with the engines' after a sync, `sync.verify`)."""
        import torch

        out: list[list[float]] = []
        self.backend.model.eval()
        with torch.no_grad():
            for batch, micro in zip(self._micro_batches(samples, num_micro), self._split(samples, num_micro)):
                logp = self._logprobs(batch).cpu()
                out += [logp[i, : len(s.completion_ids)].tolist() for i, s in enumerate(micro)]
        return out

    def save_checkpoint(self, folder: str) -> None:
        """Collective: write everything resuming needs into `folder` (an unsealed checkpoint):
        rank 0 the HF model (with LoRA: the adapter in PEFT format), every rank its backend
        state and RNG states."""
        import random

        import numpy as np
        import torch

        state = self.backend.full_state_dict(self.rank)
        os.makedirs(os.path.join(folder, "trainer"), exist_ok=True)
        if self.rank == 0 and self.lora:
            from rlvr.trainer.lora import write_adapter

            write_adapter(folder, state, self.lora, self.model_path)
        elif self.rank == 0:
            from rlvr.trainer.saved_format import saved_format
            from rlvr.run.checkpoint import write_hf_model

            write_hf_model(folder, self.model_path, saved_format(self.hf_model, state))
        self.backend.save_state(os.path.join(folder, "trainer"), self.rank)
        rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        torch.save(rng, os.path.join(folder, "trainer", f"rng_rank{self.rank}.pt"))

    def finalize_checkpoint(self, tmp: str, path: str, run_state: dict, files: dict | None = None) -> str:
        """Rank 0: seal the checkpoint the ranks wrote into `tmp` (manifest, fsync, rename)."""
        from rlvr.run.checkpoint import finalize_checkpoint

        return finalize_checkpoint(tmp, path, run_state, files)

    def load_checkpoint(self, folder: str) -> None:
        """Collective: restore model, optimizer, scheduler and RNG states from a checkpoint
        written with the same number of ranks."""
        import random

        import numpy as np
        import torch

        self.backend.load_state(os.path.join(folder, "trainer"), self.rank)
        rng = torch.load(os.path.join(folder, "trainer", f"rng_rank{self.rank}.pt"), weights_only=False)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


def completion_logits(model, batch, device):
    """Logits at the completion positions, [B, T, V], of a `collate`, `collate_shared` or
    `collate_packed` batch (the LM head runs on those columns only)."""
    if "packed_index" in batch:
        from rlvr.trainer.heads import packed_logits

        return packed_logits(model, batch, device)
    if "prompt_row" in batch:
        return shared_prompt_logits(model, batch, device)
    P, T = int(batch["prompt_len"]), batch["targets"].shape[1]
    out = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        position_ids=batch["position_ids"].to(device),
        logits_to_keep=T + 1,  # columns P-1 .. L-1; the last one predicts nothing
    )
    logits = out.logits[:, :-1, :]
    assert logits.shape[1] == T and batch["input_ids"].shape[1] == P + T
    return logits


def shared_prompt_logits(model, batch, device):
    """Logits at the completion positions [B, T, V] for a `collate_shared` batch: the distinct
    prompts run once with the KV cache on; each completion gets its prompt's keys/values
    (an index_select, so gradients flow back into the prompt's forward) and runs on top.
    Completion token 0 is predicted by the prompt's last position, token t by position t-1."""
    import torch

    row = batch["prompt_row"].to(device)
    first = model(input_ids=batch["prompt_ids"].to(device), attention_mask=batch["prompt_mask"].to(device),
                  position_ids=batch["prompt_positions"].to(device), use_cache=True, logits_to_keep=1)
    cache = first.past_key_values
    cache.reorder_cache(row)
    T = batch["targets"].shape[1]
    second = model(input_ids=batch["targets"].to(device), attention_mask=batch["attention_mask"].to(device),
                   position_ids=batch["position_ids"].to(device), past_key_values=cache, use_cache=True,
                   logits_to_keep=T)
    return torch.cat([first.logits[row], second.logits[:, :-1]], dim=1)


def _add(totals: dict, values: dict) -> None:
    """Accumulate a micro-batch's stats: sums, except the `*_max` keys."""
    for k, v in values.items():
        totals[k] = max(totals.get(k, v), v) if k.endswith("_max") else totals.get(k, 0.0) + v
