"""One trainer rank: a Ray actor in a torch.distributed group (gloo on CPU, NCCL on GPU).

The driver creates `trainer.num_workers` of these in a placement group, gives
each its shard of the step's samples, and calls `train_step` on all of them at
once (the calls meet in the backend's collectives).

Loss scaling, so that sharding never changes the result: the driver passes the
*global* normaliser of the batch (valid tokens for `token_mean`, sequences for
`seq_mean_token_mean`); every micro-batch divides by it, so summing micro-batch
gradients gives the full-batch gradient on each rank, and multiplying by the
world size undoes the backends' averaging over ranks.
"""

from __future__ import annotations

import os
import time

from rlvr.config import AlgorithmConfig, TrainerConfig
from rlvr.trainer.batch import TrainSample, collate, split_micro


class TrainerWorker:
    def __init__(self, rank: int, world_size: int, cfg: TrainerConfig, algo: AlgorithmConfig, seed: int,
                 temperature: float = 1.0):
        import torch

        torch.set_num_threads(cfg.num_threads)
        self.rank, self.world_size, self.cfg, self.algo, self.seed = rank, world_size, cfg, algo, seed
        self.temperature = temperature  # the rollout's: log-probs must be of the distribution sampled from

    def rendezvous_address(self) -> tuple[str, int]:
        """This node's IP and a free port on it (asked of rank 0 to set up the group)."""
        import ray

        from rlvr.trainer.group import free_port

        return ray.util.get_node_ip_address(), free_port()

    def setup(self, master_addr: str, master_port: int, model_path: str) -> int:
        """Collective: join the process group, load the model, wrap it in the backend."""
        import torch
        import torch.distributed as dist

        cfg = self.cfg
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
        self.device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=self.rank, world_size=self.world_size)
        torch.manual_seed(self.seed)

        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.float32).to(self.device)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.config.use_cache = False
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        from rlvr.trainer.backends import BACKENDS

        total_updates = cfg.total_steps * cfg.updates_per_step
        self.backend = BACKENDS[cfg.backend](model, cfg, self.device, self.world_size, total_updates)
        self.model_path = model_path
        return self.rank

    def ping(self) -> int:
        return self.rank

    # ------------------------------------------------------------------ training

    def _logprobs(self, batch):
        """Current-policy log-probs of the completion tokens, [B, T]."""
        from rlvr.algos import token_logprobs

        P, T = int(batch["prompt_len"]), batch["targets"].shape[1]
        out = self.backend.model(
            input_ids=batch["input_ids"].to(self.device),
            attention_mask=batch["attention_mask"].to(self.device),
            position_ids=batch["position_ids"].to(self.device),
            logits_to_keep=T + 1,  # columns P-1 .. L-1; the last one predicts nothing
        )
        logits = out.logits[:, :-1, :]
        assert logits.shape[1] == T and batch["input_ids"].shape[1] == P + T
        return token_logprobs(logits, batch["targets"].to(self.device), self.temperature)

    def train_step(self, samples: list[TrainSample], denominator: float, num_micro: int) -> dict[str, float]:
        """One RL step on this rank's shard: `updates_per_step` optimizer updates.

        `denominator` is the global loss normaliser of the whole step's batch and
        `num_micro` the micro-batches per update that every rank runs.
        """
        import torch

        from rlvr import algos

        t0 = time.perf_counter()
        self.backend.model.train()
        minis = split_micro(samples, self.cfg.updates_per_step)
        old = self._old_logprobs(minis, num_micro) if self.cfg.updates_per_step > 1 else None
        totals: dict[str, float] = {}
        tokens = 0.0
        for u, mini in enumerate(minis):
            for m, micro in enumerate(split_micro(mini, num_micro)):
                empty = not micro
                batch = collate(micro or samples[:1] or [TrainSample([self.pad_id], [], 0.0, [])], self.pad_id)
                mask = batch["completion_mask"].to(self.device) * (0.0 if empty else 1.0)
                logp = self._logprobs(batch)
                old_logp = old[u][m].to(self.device) if old is not None else logp.detach()
                loss_tokens, metrics = algos.POLICY_LOSSES[self.algo.policy_loss](
                    logp, old_logp, batch["advantages"].to(self.device), mask,
                    clip_low=self.algo.clip_low, clip_high=self.algo.clip_high,
                )
                loss = algos.aggregate(loss_tokens, mask, self.algo.loss_agg, denominator=denominator / self.cfg.updates_per_step)
                self.backend.backward(loss * self.world_size, last=(m == num_micro - 1))
                n = float(mask.sum())
                tokens += n
                with torch.no_grad():
                    diff = ((logp.detach() - batch["rollout_logprobs"].to(self.device)).abs() * mask).sum()
                _add(totals, {"loss": loss.item(), "rollout_logprob_diff_sum": diff.item(),
                              **{k: v * n for k, v in metrics.items()}})
            totals["grad_norm"] = totals.get("grad_norm", 0.0) + self.backend.step() / len(minis)
        totals["lr"] = self.backend.lr()
        totals["tokens"] = tokens
        totals["time"] = time.perf_counter() - t0
        return totals

    def _old_logprobs(self, minis, num_micro):
        import torch

        with torch.no_grad():
            return [[self._logprobs(collate(micro or minis[0][:1], self.pad_id)).cpu() for micro in split_micro(mini, num_micro)]
                    for mini in minis]

    # ------------------------------------------------------------------ weights out

    def full_state_dict(self):
        """Collective: every rank must call it. Rank 0 returns HF-named CPU tensors."""
        return self.backend.full_state_dict(self.rank)

    def save_hf(self, path: str, extra: dict | None = None) -> str | None:
        """Collective: write an HF-format model + tokenizer folder atomically (rank 0 writes).

        `extra` (run state such as step and sampler position) goes to `rlvr_state.json`.
        """
        state = self.backend.full_state_dict(self.rank)
        if self.rank != 0:
            return None
        from rlvr.checkpoint import save_hf_checkpoint

        return save_hf_checkpoint(path, self.model_path, state, extra=extra)


def _add(totals: dict, values: dict) -> None:
    for k, v in values.items():
        totals[k] = totals.get(k, 0.0) + v
