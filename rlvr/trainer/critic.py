"""PPO's critic: a value model trained by its own trainer group (the `critic` section).

The value model is the policy's architecture with a scalar head:
`AutoModelForTokenClassification(num_labels=1)` (transformers' generic token-classification
head on the decoder, dropout off), initialised from the policy's starting model (the head
zeroed, so every first value is 0) or from `critic.path`. Its value of completion token t,
V(s_t), is read at the position that predicts token t (the state before it is sampled).

`CriticWorker` is a `TrainerWorker` (the same backends, FSDP2 or DeepSpeed ZeRO, the same
micro-batching, loss scaling, checkpoints and RNG states) that loads the value model and whose
micro-batch loss is the clipped value loss (`rlvr.algos.value_loss`, token-mean over the whole
batch). `CriticGroup` is a `TrainerGroup` of them, with `values` (V per token, for GAE) and
`train` (one update toward the returns). A checkpoint holds the critic in `<checkpoint>/critic/`
(an HF folder of the value model, plus its ranks' backend and RNG states).

Not supported yet: LoRA on the critic (the policy may use it), a model type without a
token-classification class in transformers.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from rlvr.trainer.group import TrainerGroup
from rlvr.trainer.worker import TrainerWorker
from rlvr.types import TrainSample

HEAD = "score"  # the scalar head's module name in transformers' token-classification models


def value_model(path: str):
    """The value model from `path` (a policy's folder or a critic's), fp32 on the CPU; a head that
    `path` lacks starts at zero (values 0 until it learns; the same on every rank)."""
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(path, num_labels=1)
    config.classifier_dropout = 0.0  # the generic head's default is 0.1: values must be deterministic
    model, info = AutoModelForTokenClassification.from_pretrained(path, config=config, dtype=torch.float32,
                                                                  output_loading_info=True)
    head = getattr(model, HEAD)
    if any(k.startswith(f"{HEAD}.") for k in info["missing_keys"]):
        with torch.no_grad():
            head.weight.zero_()
            if head.bias is not None:
                head.bias.zero_()
    return model


def completion_values(model, batch, device):
    """V(s_t) of every completion token [B, T] of a `collate` batch: the head's output at the
    column that predicts token t (P - 1 + t); of a `collate_shared` batch: the prompts once with
    the KV cache on, then the completions on top (as `rlvr.trainer.worker.shared_prompt_logits`;
    the head's model returns no cache, so it fills one passed in); of a `collate_packed` batch:
    `rlvr.trainer.packed.packed_values`."""
    if "packed_index" in batch:
        from rlvr.trainer.packed import packed_values

        return packed_values(model, batch, device)
    if "prompt_row" in batch:
        from transformers import DynamicCache

        row, cache = batch["prompt_row"].to(device), DynamicCache()
        first = model(input_ids=batch["prompt_ids"].to(device), attention_mask=batch["prompt_mask"].to(device),
                      position_ids=batch["prompt_positions"].to(device), past_key_values=cache, use_cache=True)
        cache.reorder_cache(row)
        second = model(input_ids=batch["targets"].to(device), attention_mask=batch["attention_mask"].to(device),
                       position_ids=batch["position_ids"].to(device), past_key_values=cache, use_cache=True)
        return torch.cat([first.logits[:, -1:, 0][row], second.logits[:, :-1, 0]], dim=1).float()
    P, T = int(batch["prompt_len"]), batch["targets"].shape[1]
    out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                position_ids=batch["position_ids"].to(device))
    return out.logits[:, P - 1:P - 1 + T, 0].float()


class CriticWorker(TrainerWorker):
    """One critic rank (see the module docstring). `value_clip`: `critic.value_clip`;
    `init_path`: `critic.path` (None: the policy's starting model)."""

    def __init__(self, rank: int, world_size: int, cfg, algo, seed: int, value_clip: float | None = None,
                 init_path: str | None = None, **options):
        super().__init__(rank, world_size, cfg, algo, seed, **options)
        self.value_clip, self.init_path = value_clip, init_path

    def _pretrained(self, model_path: str):
        return value_model(self.init_path or model_path)

    def _old_logprobs(self, minis, num_micro):
        return None  # the critic's "old" values travel with the samples (`TrainSample.values`)

    def _micro_loss(self, batch, old_logp, denominator: float):
        import torch

        from rlvr import algos

        mask = batch["completion_mask"].to(self.device)
        values = completion_values(self.backend.model, batch, self.device)
        loss_tokens, metrics = algos.value_loss(values, batch["old_values"].to(self.device),
                                                batch["returns"].to(self.device), mask, clip=self.value_clip)
        loss = algos.aggregate(loss_tokens, mask, "token_mean", denominator=denominator)
        n = float(mask.sum())
        with torch.no_grad():
            values_sum = (values * mask).sum().item()
        return loss, {"loss": loss.item(), "tokens": n, "clip_frac_sum": metrics["clip_frac"] * n,
                      "values_sum": values_sum}

    def token_values(self, samples: list[TrainSample], num_micro: int) -> list[list[float]]:
        """Collective: V(s_t) of every completion token of this rank's samples."""
        import torch

        out: list[list[float]] = []
        self.backend.model.eval()
        with torch.no_grad():
            # the same split as `_micro_batches` (by tokens with trainer.max_tokens_per_micro): a plain
            # split by count there gave samples the values of other samples' tokens
            for batch, micro in zip(self._micro_batches(samples, num_micro), self._split(samples, num_micro)):
                values = completion_values(self.backend.model, batch, self.device).cpu()
                out += [values[i, : len(s.completion_ids)].tolist() for i, s in enumerate(micro)]
        return out

    def save_checkpoint(self, folder: str) -> None:
        super().save_checkpoint(os.path.join(folder, "critic"))

    def load_checkpoint(self, folder: str) -> None:
        super().load_checkpoint(os.path.join(folder, "critic"))


class CriticGroup(TrainerGroup):
    """The critic ranks (`critic`: the `critic` section, `trainer`: the policy's, whose backend
    and rank count it takes; `rlvr.config.critic.CriticConfig.trainer_config`). `pg`: the run's
    placement group, whose bundles hold the critic's share beside each trainer rank."""

    role = "critic"

    def __init__(self, critic, trainer, algo, model_path: str, seed: int, **kwargs):
        from rlvr.config import KLConfig

        # the value loss is a token mean; no reference model, correction or entropy term
        algo = dataclasses.replace(algo, aggregation="token_mean", kl=KLConfig(), correction=None, tis_cap=None,
                                   entropy_coef=0.0)
        super().__init__(critic.trainer_config(trainer), algo, model_path, seed,
                         worker_options={"value_clip": critic.value_clip, "init_path": critic.path}, **kwargs)

    @staticmethod
    def worker_class():
        return CriticWorker

    def values(self, samples: list[TrainSample]) -> list[list[float]]:
        """V(s_t) of every completion token of every sample, in sample order."""
        return self._per_sample("token_values", samples)

    def train(self, samples: list[TrainSample]) -> dict:
        """One critic update toward the samples' `returns` (from their `values`, clipped);
        returns the `critic/*` metrics."""
        from rlvr import algos
        from rlvr.trainer.batch import num_micro_batches, shard_for_ranks

        if not samples:
            return {}
        shards = shard_for_ranks(samples, len(self._ranks))
        denominator = algos.normaliser([s.num_loss_tokens for s in samples], "token_mean")
        micro = num_micro_batches(shards, self.cfg.micro_batch_size, self.cfg.max_tokens_per_micro,
                                  self.cfg.pack_sequences)
        results = self._all("train_step", [(s, denominator, micro) for s in shards])
        tokens = sum(r["tokens"] for r in results) or 1.0
        # each of the `updates_per_step` mini-batches' losses is a token mean over that mini-batch
        # (divided by denominator / updates_per_step): their sum is updates_per_step x the batch's mean
        return {"critic/value_loss": sum(r["loss"] for r in results) / self.cfg.updates_per_step,
                "critic/grad_norm": results[0]["grad_norm"],
                "critic/lr": results[0]["lr"], "critic/clip_frac": sum(r["clip_frac_sum"] for r in results) / tokens,
                "critic/values_mean": sum(r["values_sum"] for r in results) / tokens,
                "critic/worker_s": max(r["time"] for r in results)}
