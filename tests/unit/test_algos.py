"""Algorithms against hand-computed values; fast paths against slow references."""

import math

import pytest
import torch

from rlvr import algos
from rlvr.trainer.batch import split_micro


def test_grpo_hand_computed():
    # group 0: rewards [1, 0, 0, 1] -> mean 0.5, population std 0.5 -> +-1 (minus eps effect)
    # group 1: rewards [1, 1] -> std 0 -> 0 advantage
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    g = torch.tensor([0, 0, 0, 0, 1, 1])
    adv = algos.ADVANTAGES["grpo"](r, g, eps=1e-6)
    expected = [0.5 / (0.5 + 1e-6), -0.5 / (0.5 + 1e-6), -0.5 / (0.5 + 1e-6), 0.5 / (0.5 + 1e-6), 0.0, 0.0]
    assert adv.tolist() == pytest.approx(expected, abs=1e-7)
    assert algos.uniform_groups(r, g).tolist() == [False] * 4 + [True] * 2


def test_dr_grpo_is_mean_centred():
    # group 0: [3, 1] -> mean 2 -> [1, -1]; group 1: [0, 0, 6] -> mean 2 -> [-2, -2, 4]
    adv = algos.ADVANTAGES["dr_grpo"](torch.tensor([3.0, 1.0, 0.0, 0.0, 6.0]), torch.tensor([0, 0, 1, 1, 1]))
    assert adv.tolist() == pytest.approx([1.0, -1.0, -2.0, -2.0, 4.0])


def test_grpo_matches_slow_reference_on_random_groups():
    gen = torch.Generator().manual_seed(0)
    r = torch.rand(64, generator=gen).round()
    g = torch.randint(0, 9, (64,), generator=gen)
    assert torch.allclose(algos.grpo_advantages(r, g), algos.grpo_advantages_reference(r, g), atol=1e-6)


def test_ppo_clip_hand_computed():
    # token ratios exp(logp - old): [e^0.5=1.6487, e^-0.5=0.6065]; A = +1 for row 0, -1 for row 1
    logp = torch.tensor([[0.5, -0.5], [0.5, -0.5]])
    old = torch.zeros(2, 2)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, m = algos.ppo_clip_loss(logp, old, torch.tensor([1.0, -1.0]), mask, clip_low=0.2, clip_high=0.2)
    # row 0 (A=+1): min(1.6487, 1.2) = 1.2 -> -1.2 ; min(0.6065, 0.8) = 0.6065 -> -0.6065
    # row 1 (A=-1): min(-1.6487, -1.2) = -1.6487 -> +1.6487 ; masked -> 0
    assert loss.flatten().tolist() == pytest.approx([-1.2, -math.exp(-0.5), math.exp(0.5), 0.0], abs=1e-4)
    # clipped term chosen for row0/token0 only -> 1 of 3 valid tokens
    assert m["clip_fraction"] == pytest.approx(1 / 3)


def test_clip_higher_is_asymmetric():
    logp, old = torch.tensor([[0.3]]), torch.zeros(1, 1)  # ratio 1.35
    mask = torch.ones(1, 1)
    sym, _ = algos.ppo_clip_loss(logp, old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.2)
    high, _ = algos.ppo_clip_loss(logp, old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.28)
    assert sym.item() == pytest.approx(-1.2) and high.item() == pytest.approx(-1.28)


@pytest.mark.parametrize("mode", sorted(algos.AGGREGATIONS))
def test_aggregation_over_shards_equals_whole_batch(mode):
    gen = torch.Generator().manual_seed(1)
    loss = torch.randn(10, 7, generator=gen)
    mask = (torch.rand(10, 7, generator=gen) > 0.3).float()
    mask[:, 0] = 1
    whole = algos.aggregate(loss, mask, mode)
    denominator = algos.normaliser(mask, mode)
    rows = list(range(10))
    parts = [algos.aggregate(loss[idx], mask[idx], mode, denominator=denominator) for idx in split_micro(rows, 3)]
    assert sum(parts).item() == pytest.approx(whole.item(), rel=1e-6)


def test_token_logprobs_matches_log_softmax():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 11, generator=gen)
    targets = torch.randint(0, 11, (2, 3), generator=gen)
    ref = torch.log_softmax(logits / 0.7, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(algos.token_logprobs(logits, targets, temperature=0.7), ref, atol=1e-6)
