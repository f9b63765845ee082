"""PPO's critic group on real Ray with 2 ranks over gloo (FSDP2 and DeepSpeed ZeRO-3).

As for the policy (test_trainer_group.py): splitting the batch over ranks and micro-batches must
not change the result. The 2-rank critic's values, value loss, gradient norm and its weights after
one AdamW step equal a single-process computation on the whole batch; its checkpoint part is an HF
value model that gives the same values.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from rlvr import algos
from rlvr.config import AlgorithmConfig, CriticConfig, TrainerConfig
from rlvr.trainer.batch import collate
from tests.helpers.stack import make_samples


@pytest.fixture(scope="module")
def critic_dir(random_model_dir, tmp_path_factory):
    """A value model with a random (non-zero) head, so the backbone gets gradients at once."""
    from rlvr.trainer.critic import value_model

    model = value_model(random_model_dir)
    assert float(model.score.weight.abs().sum()) == 0.0  # a new head starts at zero
    torch.manual_seed(3)
    torch.nn.init.normal_(model.score.weight, std=0.5)
    out = str(tmp_path_factory.mktemp("critic"))
    model.save_pretrained(out)
    return out


def _reference_step(critic_dir, samples, lr, clip):
    """Single process, whole batch: values, the value loss and grad norm, then one clipped AdamW step."""
    from rlvr.trainer.critic import completion_values, value_model

    model = value_model(critic_dir)
    batch = collate(samples, pad_id=0)
    values = completion_values(model, batch, torch.device("cpu"))
    mask = batch["completion_mask"]
    loss_tokens, metrics = algos.value_loss(values, batch["old_values"], batch["returns"], mask, clip=clip)
    loss = algos.aggregate(loss_tokens, mask, "token_mean")
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # trainer.grad_clip
    torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0).step()
    with torch.no_grad():
        after = completion_values(model, batch, torch.device("cpu"))
    return values.detach(), loss.item(), norm.item(), metrics["clip_frac"], after


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend,stage,max_tokens", [("fsdp2", 2, 0), ("deepspeed", 3, 36)])
def test_two_rank_critic_matches_single_process(ray_cluster, random_model_dir, critic_dir, tmp_path, backend, stage,
                                                max_tokens):
    """ZeRO-3 also splits micro-batches by tokens (`trainer.max_tokens_per_micro: 36`: rank 0's 7
    samples go 3/3/1, not 3/2/2 as by count), so each sample must get its own values back."""
    from rlvr.trainer.batch import num_micro_batches, shard_for_ranks, split_by_tokens, split_micro
    from rlvr.trainer.critic import CriticGroup, value_model

    trainer = TrainerConfig(backend=backend, num_workers=2, micro_batch_size=3, total_steps=2,
                            max_tokens_per_micro=max_tokens)
    trainer.deepspeed.zero_stage = stage
    critic = CriticConfig(path=critic_dir, lr=1e-3, value_clip=0.05, cpus_per_worker=0.25)
    samples = make_samples(7, group=3) + make_samples(6, seed=1)  # 13 samples: 7 and 6 per rank, 3 micro-batches
    if max_tokens:  # the token split differs from the count split here (what the test is for)
        shard = shard_for_ranks(samples, 2)[0]
        count = num_micro_batches([shard], 3, max_tokens)
        assert count == 3 and [len(c) for c in split_by_tokens(shard, 3)] != [len(c) for c in split_micro(shard, 3)]
    group = CriticGroup(critic, trainer, AlgorithmConfig(), random_model_dir, seed=0)
    try:
        values = group.values(samples)
        g = torch.Generator().manual_seed(0)
        samples = [dataclasses.replace(s, values=v, returns=(torch.tensor(v) + torch.randn(len(v), generator=g)).tolist())
                   for s, v in zip(samples, values)]
        # V_old = V would clip nothing before the step: shift V_old on every other sample so the clip bites
        samples = [dataclasses.replace(s, values=[x + 0.1 * (i % 2) for x in s.values]) for i, s in enumerate(samples)]
        ref_values, ref_loss, ref_norm, ref_clip, ref_after = _reference_step(critic_dir, samples, 1e-3, 0.05)
        for s, v, ref in zip(samples, values, ref_values):
            assert v == pytest.approx(ref[: len(s.completion_ids)].tolist(), abs=1e-5)
        stats = group.train(samples)
        assert stats["critic/value_loss"] == pytest.approx(ref_loss, rel=1e-4)
        assert stats["critic/grad_norm"] == pytest.approx(ref_norm, rel=1e-3)
        assert stats["critic/clip_frac"] == pytest.approx(ref_clip, abs=1e-6) and 0 < ref_clip < 1
        after = group.values(samples)
        for s, v, ref in zip(samples, after, ref_after):
            assert v == pytest.approx(ref[: len(s.completion_ids)].tolist(), abs=1e-4)
        assert after != values

        # the checkpoint part: an HF value model with the trained weights
        group.write_into(str(tmp_path))
        saved = value_model(os.path.join(tmp_path, "critic"))
        from rlvr.trainer.critic import completion_values

        with torch.no_grad():
            again = completion_values(saved, collate(samples, pad_id=0), torch.device("cpu"))
        assert torch.allclose(again, ref_after, atol=1e-4)
        # resuming: another update moves the critic; loading the checkpoint part brings back its weights
        group.train(samples)
        assert group.values(samples) != after
        with open(os.path.join(tmp_path, "rlvr_state.json"), "w") as f:
            f.write('{"step": 1}')
        assert group.load_checkpoint(str(tmp_path)) == {"step": 1}
        assert group.values(samples) == after
    finally:
        group.stop()
