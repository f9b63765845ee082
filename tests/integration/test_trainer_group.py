"""The trainer group on real Ray with 2 ranks over gloo, for both backends.

The key property: splitting a step's batch over ranks and micro-batches must not
change the result. Loss and gradient norm reported by the 2-rank group are
compared with a single-process computation of the same loss on the whole batch.
"""

from __future__ import annotations

import pytest
import torch

from rlvr import algos
from rlvr.config import AlgorithmConfig, TrainerConfig
from rlvr.trainer.batch import collate, num_micro_batches, shard_for_ranks
from rlvr.types import TrainSample
from tests.helpers.stack import make_samples


def reference_loss_and_grad_norm(model_dir: str, samples: list[TrainSample], aggregation: str = "token_mean",
                                 max_tokens: int | None = None) -> tuple[float, float]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    batch = collate(samples, pad_id=0)
    T = batch["targets"].shape[1]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"]).logits[:, -T - 1 : -1]
    logp = algos.token_logprobs(logits, batch["targets"])
    loss_tokens, _ = algos.ppo_clip_loss(logp, logp.detach(), batch["advantages"], batch["completion_mask"])
    loss = algos.aggregate(loss_tokens, batch["completion_mask"], aggregation, max_tokens=max_tokens)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    return loss.item(), norm.item()


@pytest.mark.timeout(300)  # a layout mismatch between ranks hangs in a collective: fail, don't hang CI
@pytest.mark.parametrize("backend,stage,aggregation,layout,max_tokens,pack", [
    ("fsdp2", 2, "token_mean", "groups", 0, False), ("deepspeed", 2, "token_mean", "groups", 0, False),
    ("deepspeed", 3, "token_mean", "mixed", 30, False), ("fsdp2", 2, "seq_mean_token_sum_norm", "mixed", 30, False),
    ("deepspeed", 3, "seq_mean_token_sum_norm", "mixed", 30, True), ("fsdp2", 2, "token_mean", "mixed", 30, True),
])
def test_two_ranks_match_single_process(ray_cluster, random_model_dir, backend, stage, aggregation, layout,
                                        max_tokens, pack):
    """2 ranks give the single-process loss and gradient. `groups`: every micro-batch holds
    shared prompts (two forwards, one backward). `mixed`: rank 0's shard holds groups and rank
    1's only distinct prompts; a rank that ran the plain layout (one forward) beside one that
    ran the shared layout (two) deadlocked 2-rank FSDP2 and ZeRO-3, so every rank must use one.
    `max_tokens` > 0: micro-batches balanced by tokens (`trainer.max_tokens_per_micro`): padded
    ones, or with `pack` (`trainer.pack_sequences`: one unpadded row per micro-batch) real ones."""
    import ray

    from rlvr.trainer.group import TrainerGroup

    cfg = TrainerConfig(backend=backend, num_workers=2, micro_batch_size=3, total_steps=2, lr=1e-3,
                        max_tokens_per_micro=max_tokens, pack_sequences=pack)
    cfg.deepspeed.zero_stage = stage
    samples = make_samples(13, group=3) if layout == "groups" else make_samples(7, group=3) + make_samples(6, seed=1)
    group = TrainerGroup(cfg, AlgorithmConfig(aggregation=aggregation), random_model_dir, seed=0, norm_tokens=8)
    workers = group.handles
    try:
        shards = shard_for_ranks(samples, 2)
        denominator = algos.normaliser([len(s.completion_ids) for s in samples], aggregation)
        micro = num_micro_batches(shards, cfg.micro_batch_size, cfg.max_tokens_per_micro, pack)
        # 7 and 6 samples, micro-batches of 3 (or of <= 30 padded / real tokens): uneven and with accumulation
        assert micro == 3 if not max_tokens else micro >= 3
        results = ray.get([w.train_step.remote(shard, denominator, micro) for w, shard in zip(workers, shards)],
                          timeout=240)
        ref_loss, ref_norm = reference_loss_and_grad_norm(random_model_dir, samples, aggregation, max_tokens=8)
        assert sum(r["loss"] for r in results) == pytest.approx(ref_loss, rel=1e-4, abs=1e-6)
        assert results[0]["grad_norm"] == pytest.approx(ref_norm, rel=1e-3)
        assert results[0]["grad_norm"] == pytest.approx(results[1]["grad_norm"], rel=1e-6)

        # after the update both ranks hold the same full weights, and they changed
        states = ray.get([w.full_state_dict.remote() for w in workers])
        assert states[1] is None and states[0]
        from safetensors.torch import load_file
        import os

        start = load_file(os.path.join(random_model_dir, "model.safetensors"))
        changed = [k for k in start if not torch.equal(start[k], states[0][k])]
        assert len(changed) == len(start), "every parameter should move after one AdamW step"
    finally:
        group.stop()


def _gspo_tis(logp, batch, mask):
    loss_tokens, _ = algos.gspo_loss(logp, logp.detach(), batch["advantages"], mask, clip_low=0.1, clip_high=0.1)
    return loss_tokens * algos.tis_weights(logp.detach(), batch["rollout_logprobs"], 1.5)


def _cispo_icepop(logp, batch, mask):
    loss_tokens, _ = algos.cispo_loss(logp, logp.detach(), batch["advantages"], mask, clip_low=1.0, clip_high=0.28)
    weights, _ = algos.icepop_correction(logp.detach(), batch["rollout_logprobs"], mask, low=0.9, high=1.1)
    return loss_tokens * weights


def _near_policy_rollouts(model_dir: str, samples: list[TrainSample]) -> list[TrainSample]:
    import dataclasses

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    batch = collate(samples, pad_id=0)
    T = batch["targets"].shape[1]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits[:, -T - 1 : -1]
        logp = algos.token_logprobs(logits, batch["targets"])
    noise = (torch.rand(logp.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.4
    return [dataclasses.replace(s, rollout_logprobs=(logp[i] + noise[i])[: len(s.completion_ids)].tolist())
            for i, s in enumerate(samples)]


@pytest.mark.parametrize("algo_keys,loss_fn", [
    ({"loss": "gspo", "clip_low": 0.1, "clip_high": 0.1, "tis_cap": 1.5, "dual_clip": 3.0}, _gspo_tis),
    ({"loss": "cispo", "clip_low": 1.0, "clip_high": 0.28, "correction": "icepop", "correction_low": 0.9,
      "correction_high": 1.1}, _cispo_icepop),
], ids=["gspo_tis", "cispo_icepop"])
def test_gspo_tis_entropy_dual_clip_match_single_process(ray_cluster, random_model_dir, algo_keys, loss_fn):
    """The less common loss terms, through the real 2-rank trainer: GSPO + truncated IS (or
    CISPO + IcePop) + entropy bonus, compared with the same formula computed in this process."""
    import ray
    from transformers import AutoModelForCausalLM

    from rlvr.trainer.group import TrainerGroup

    algo = AlgorithmConfig(entropy_coef=0.01, **algo_keys)
    cfg = TrainerConfig(backend="fsdp2", num_workers=2, micro_batch_size=4, total_steps=1)
    samples = make_samples(10, seed=3)
    if algo_keys.get("correction"):  # engine log-probs within ~0.2 of the model's: the band masks some tokens, not all
        samples = _near_policy_rollouts(random_model_dir, samples)
    group = TrainerGroup(cfg, algo, random_model_dir, seed=0)
    try:
        shards = shard_for_ranks(samples, 2)
        denominator = algos.normaliser([len(s.completion_ids) for s in samples], "token_mean")
        results = ray.get([w.train_step.remote(s, denominator, num_micro_batches(shards, 4))
                           for w, s in zip(group.handles, shards)])
    finally:
        group.stop()

    model = AutoModelForCausalLM.from_pretrained(random_model_dir, dtype=torch.float32)
    batch = collate(samples, pad_id=0)
    T = batch["targets"].shape[1]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"]).logits[:, -T - 1 : -1]
    mask = batch["completion_mask"]
    logp = algos.token_logprobs(logits, batch["targets"])
    loss_tokens = loss_fn(logp, batch, mask) - 0.01 * algos.entropy_from_logits(logits)
    loss = algos.aggregate(loss_tokens * mask, mask, "token_mean")
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    assert sum(r["loss"] for r in results) == pytest.approx(loss.item(), rel=1e-4, abs=1e-6)
    assert results[0]["grad_norm"] == pytest.approx(norm.item(), rel=1e-3)
    if algo_keys.get("correction"):  # the band masked some tokens, kept others
        assert 0 < sum(r["correction_masked_tokens"] for r in results) < mask.sum().item()


def test_placement_group_that_cannot_be_placed_reports_then_gives_up(ray_cluster, capsys):
    """Bundles the cluster cannot hold: a 'waiting' line every report_every_s, then one-line
    ClusterFitError at cluster.startup_timeout_s, and the pending group is removed."""
    import ray

    from rlvr.cluster.fit import ClusterFitError
    from rlvr.cluster.placement import create_placement_group

    before = len(ray.util.placement_group_table())
    with pytest.raises(ClusterFitError, match=r"within 3 s \(cluster.startup_timeout_s"):
        create_placement_group([{"CPU": 1000.0}], timeout_s=3, report_every_s=1)
    assert "[rlvr] waiting for Ray to place the trainer ranks' bundles [{'CPU': 1000.0}]" in capsys.readouterr().out
    states = [pg["state"] for pg in ray.util.placement_group_table().values()][before:]
    assert states == ["REMOVED"]
