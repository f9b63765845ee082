"""Algorithms against hand-computed values; fast paths against slow references."""

import math

import pytest
import torch

from rlvr import algos
from rlvr.trainer.batch import split_micro

E05, EM05 = math.exp(0.5), math.exp(-0.5)  # 1.648721, 0.606531


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- advantages


def test_grpo_hand_computed():
    # group 0: rewards [1, 0, 0, 1] -> mean 0.5, population std 0.5 -> +-0.5/(0.5+eps)
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


def test_rloo_leaves_one_out():
    # group 0: [1, 0, 0, 1]: a 1 sees others (0+0+1)/3 = 1/3 -> 2/3; a 0 sees (1+0+1)/3 = 2/3 -> -2/3
    # group 1: [3, 1] -> 3-1 = 2, 1-3 = -2 ; group 2: [5] alone -> 0
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 1.0, 5.0])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    adv = algos.ADVANTAGES["rloo"](r, g)
    assert adv.tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3, 2.0, -2.0, 0.0], abs=1e-6)


def test_reinforce_pp_uses_batch_std():
    # group 0: [14, 0] -> mean 7 -> centred [7, -7]; group 1: [2, 0] -> mean 1 -> [1, -1]
    # batch std of centred (mean 0): sqrt((49 + 49 + 1 + 1) / 4) = sqrt(25) = 5
    # -> [7, -7, 1, -1] / (5 + 1e-6) = [1.4, -1.4, 0.2, -0.2] (GRPO would give +-1 for both groups)
    r = torch.tensor([14.0, 0.0, 2.0, 0.0])
    g = torch.tensor([0, 0, 1, 1])
    adv = algos.ADVANTAGES["reinforce_pp"](r, g, eps=1e-6)
    assert adv.tolist() == pytest.approx([7 / (5 + 1e-6), -7 / (5 + 1e-6), 1 / (5 + 1e-6), -1 / (5 + 1e-6)], abs=1e-6)


def test_advantage_registry_is_uniform():
    # every variant takes (rewards, group_ids, **opts), ignores unknown opts, keeps shape and dtype
    r, g = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0, 0, 0])
    assert set(algos.ADVANTAGES) == algos.GROUP_ADVANTAGES == {"grpo", "dr_grpo", "rloo", "reinforce_pp"}
    for fn in algos.ADVANTAGES.values():
        out = fn(r, g, eps=1e-6, unknown_option=1)
        assert out.shape == r.shape and out.dtype == r.dtype


@pytest.mark.parametrize(
    "name, reference",
    [
        ("grpo", algos.grpo_advantages_reference),
        ("dr_grpo", algos.dr_grpo_advantages_reference),
        ("rloo", algos.rloo_advantages_reference),
        ("reinforce_pp", algos.reinforce_pp_advantages_reference),
    ],
)
def test_advantages_match_slow_reference_on_random_groups(name, reference):
    gen = _gen(0)
    r = torch.rand(64, generator=gen).round()  # binary rewards: uniform groups included
    r[::5] = torch.rand(13, generator=gen)  # and some graded ones
    g = torch.randint(0, 12, (64,), generator=gen)  # random sizes, some of one
    assert torch.allclose(algos.ADVANTAGES[name](r, g), reference(r, g), atol=1e-5)


# --------------------------------------------------------------------------- policy losses


def test_ppo_clip_hand_computed():
    # token ratios exp(logp - old): [e^0.5=1.6487, e^-0.5=0.6065]; A = +1 for row 0, -1 for row 1
    logp = torch.tensor([[0.5, -0.5], [0.5, -0.5]])
    old = torch.zeros(2, 2)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, m = algos.ppo_clip_loss(logp, old, torch.tensor([1.0, -1.0]), mask, clip_low=0.2, clip_high=0.2)
    # row 0 (A=+1): min(1.6487, 1.2) = 1.2 -> -1.2 ; min(0.6065, 0.8) = 0.6065 -> -0.6065
    # row 1 (A=-1): min(-1.6487, -1.2) = -1.6487 -> +1.6487 ; masked -> 0
    assert loss.flatten().tolist() == pytest.approx([-1.2, -EM05, E05, 0.0], abs=1e-4)
    # clipped term chosen for row0/token0 only -> 1 of 3 valid tokens
    assert m["clip_fraction"] == pytest.approx(1 / 3)
    # k3 = (r - 1) - log r over the 3 valid tokens:
    # (1.648721 - 1 - 0.5) = 0.148721 twice, (0.606531 - 1 + 0.5) = 0.106531 -> 0.403973 / 3 = 0.134658
    assert m["approx_kl"] == pytest.approx((2 * (E05 - 1.5) + (EM05 - 0.5)) / 3, abs=1e-6)


def test_clip_higher_is_asymmetric():
    logp, old = torch.tensor([[0.3]]), torch.zeros(1, 1)  # ratio e^0.3 = 1.35
    mask = torch.ones(1, 1)
    # symmetric: clip at 1 + 0.2 -> -1.2 ; clip-higher: clip at 1 + 0.28 -> -1.28
    sym, _ = algos.ppo_clip_loss(logp, old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.2)
    high, _ = algos.ppo_clip_loss(logp, old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.28)
    assert sym.item() == pytest.approx(-1.2) and high.item() == pytest.approx(-1.28)
    # the low side still uses clip_low: ratio e^-0.3 = 0.7408, A = -1 -> -min(-0.7408, -0.8) = 0.8
    low, _ = algos.ppo_clip_loss(-logp, old, torch.tensor([-1.0]), mask, clip_low=0.2, clip_high=0.28)
    assert low.item() == pytest.approx(0.8)


def test_dual_clip_caps_negative_advantage_loss():
    # ratios [e^1.5 = 4.4817, e^ln2 = 2]; c = 3, clip 0.2
    logp = torch.tensor([[1.5, math.log(2.0)], [1.5, math.log(2.0)]])
    old, mask = torch.zeros(2, 2), torch.ones(2, 2)
    adv = torch.tensor([-1.0, 1.0])
    loss, m = algos.ppo_clip_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.2, dual_clip=3.0)
    # row 0 (A=-1): plain loss -min(-4.4817, -1.2) = 4.4817 -> capped at -3 * -1 = 3
    #               plain loss -min(-2, -1.2) = 2 < 3 -> 2
    # row 1 (A=+1): untouched by dual clip: -min(4.4817, 1.2) = -1.2 ; -min(2, 1.2) = -1.2
    assert loss.flatten().tolist() == pytest.approx([3.0, 2.0, -1.2, -1.2], abs=1e-5)
    assert m["dual_clip_fraction"] == pytest.approx(1 / 4)  # one of four tokens hit the cap
    plain, _ = algos.ppo_clip_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    assert plain[0, 0].item() == pytest.approx(math.exp(1.5), abs=1e-5)
    with pytest.raises(ValueError):
        algos.ppo_clip_loss(logp, old, adv, mask, dual_clip=1.0)


def test_gspo_hand_computed_value_and_gradient():
    # row 0: logp [0.2, 0.4], A = +1 -> s = exp(0.3) = 1.349859, clip 1.2 < s -> loss -1.2 per token, clipped
    # row 1: logp [0.1, -0.3, (5.0 masked)], A = -2 -> s = exp(-0.1) = 0.904837 inside [0.8, 1.2]
    #        -> loss -min(-2 * 0.904837, same) = 1.809675 per valid token, 0 on the masked one
    logp = torch.tensor([[0.2, 0.4, 0.0], [0.1, -0.3, 5.0]], requires_grad=True)
    old = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    loss, m = algos.gspo_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    s1 = math.exp(-0.1)
    assert loss.tolist() == [pytest.approx(v, abs=1e-5) for v in ([-1.2, -1.2, 0.0], [2 * s1, 2 * s1, 0.0])]
    assert m["clip_fraction"] == pytest.approx(2 / 4)  # row 0's two tokens of the four valid ones
    # token form s_i,t = sg[s_i] * exp(logp_t - sg[logp_t]): d loss[i, t] / d logp[i, t] = -A_i * s_i
    # row 0 clipped -> 0 ; row 1: -(-2) * 0.904837 = 1.809675 ; masked -> 0
    (grad,) = torch.autograd.grad(loss.sum(), logp, retain_graph=True)
    assert grad.tolist() == [pytest.approx(v, abs=1e-5) for v in ([0.0, 0.0, 0.0], [2 * s1, 2 * s1, 0.0])]
    # and no cross-token gradient: d loss[1, 0] / d logp[1, 1] = 0
    (g10,) = torch.autograd.grad(loss[1, 0], logp)
    assert g10.tolist() == [[0.0] * 3, [pytest.approx(2 * s1, abs=1e-5), 0.0, 0.0]]


def test_gspo_sequence_form_has_same_row_gradient():
    # the paper's sequence form spreads d s_i / d logp_t = s_i / |y_i| over the row's |y_i| tokens:
    # sum over the row = |y_i| * (-A * s_i / |y_i|) = -A * s_i, the same as the token form (row 1 above)
    logp = torch.tensor([[0.1, -0.3, 5.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    ref = algos.gspo_loss_reference(logp, torch.zeros(1, 3), torch.tensor([-2.0]), mask, clip_low=0.2, clip_high=0.2)
    (grad,) = torch.autograd.grad(ref.sum(), logp)
    s1 = math.exp(-0.1)  # each valid token: 2 tokens * 2 * s1 / 2 = 2 * s1
    assert grad.tolist() == [[pytest.approx(2 * s1, abs=1e-5), pytest.approx(2 * s1, abs=1e-5), 0.0]]


def _random_policy_batch(seed, B=6, T=9):
    gen = _gen(seed)
    logp = -torch.rand(B, T, generator=gen) * 3
    old = logp + torch.randn(B, T, generator=gen) * 0.3
    adv = torch.randn(B, generator=gen)
    mask = (torch.rand(B, T, generator=gen) > 0.3).float()
    mask[:, 0] = 1
    mask[-1] = 0  # an all-padding row
    return logp, old, adv, mask


@pytest.mark.parametrize("opts", [{}, {"clip_low": 0.2, "clip_high": 0.28},
                                  {"clip_low": 0.2, "clip_high": 0.28, "dual_clip": 3.0}])
def test_ppo_clip_matches_slow_reference(opts):
    logp, old, adv, mask = _random_policy_batch(3)
    fast, _ = algos.ppo_clip_loss(logp, old, adv, mask, **opts)
    assert torch.allclose(fast.double(), algos.ppo_clip_loss_reference(logp, old, adv, mask, **opts), atol=1e-5)


@pytest.mark.parametrize("mode", sorted(algos.AGGREGATIONS))
def test_gspo_matches_sequence_form_reference(mode):
    # value per token equal; gradient equal once aggregated (all modes weigh a row's tokens equally)
    logp, old, adv, mask = _random_policy_batch(4)
    opts = {"clip_low": 0.05, "clip_high": 0.08}  # some rows clipped, some not
    x_fast = logp.clone().requires_grad_(True)
    x_ref = logp.clone().requires_grad_(True)
    fast, _ = algos.gspo_loss(x_fast, old, adv, mask, **opts)
    ref = algos.gspo_loss_reference(x_ref, old, adv, mask, **opts)
    assert torch.allclose(fast, ref, atol=1e-5)
    (g_fast,) = torch.autograd.grad(algos.aggregate(fast, mask, mode, max_tokens=9), x_fast)
    (g_ref,) = torch.autograd.grad(algos.aggregate(ref, mask, mode, max_tokens=9), x_ref)
    assert g_fast.abs().sum() > 0
    assert torch.allclose(g_fast, g_ref, atol=1e-6)


def test_policy_losses_share_signature_and_metrics():
    logp, old, adv, mask = _random_policy_batch(5)
    for fn in algos.POLICY_LOSSES.values():
        loss, m = fn(logp, old, adv, mask, clip_low=0.2, clip_high=0.2, unknown_option=1)
        assert loss.shape == logp.shape and (loss[mask == 0] == 0).all()
        assert "approx_kl" in m and all(isinstance(v, float) for v in m.values())
        assert "clip_fraction" in m or "gate_weight" in m  # SAPO has a soft gate, no clip


# --------------------------------------------------------------------------- aggregation


def test_aggregation_hand_computed():
    # valid tokens: row 0 [1, 2, 3], row 1 [4] (the 9s are padding)
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # token_mean: (1 + 2 + 3 + 4) / 4 = 2.5
    assert algos.aggregate(loss, mask, "token_mean").item() == pytest.approx(2.5)
    # seq_mean_token_mean: row means 6/3 = 2 and 4/1 = 4 -> (2 + 4) / 2 = 3
    assert algos.aggregate(loss, mask, "seq_mean_token_mean").item() == pytest.approx(3.0)
    # seq_mean_token_sum_norm, max_tokens 4: row sums 6/4 = 1.5 and 4/4 = 1 -> (1.5 + 1) / 2 = 1.25
    assert algos.aggregate(loss, mask, "seq_mean_token_sum_norm", max_tokens=4).item() == pytest.approx(1.25)
    # normaliser: 4 valid tokens for token_mean, 2 sequences for the seq_* modes
    assert algos.normaliser(mask, "token_mean") == 4.0
    assert algos.normaliser(mask, "seq_mean_token_mean") == algos.normaliser(mask, "seq_mean_token_sum_norm") == 2.0
    # denominator replaces the batch's own count: token_mean 10 / 5 = 2 ; seq_mean_token_mean (2 + 4) / 4 = 1.5
    assert algos.aggregate(loss, mask, "token_mean", denominator=5.0).item() == pytest.approx(2.0)
    assert algos.aggregate(loss, mask, "seq_mean_token_mean", denominator=4.0).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="max_tokens"):
        algos.aggregate(loss, mask, "seq_mean_token_sum_norm")


@pytest.mark.parametrize("mode", sorted(algos.AGGREGATIONS))
def test_aggregation_matches_slow_reference(mode):
    gen = _gen(6)
    loss = torch.randn(7, 5, generator=gen)
    mask = (torch.rand(7, 5, generator=gen) > 0.4).float()
    mask[2] = 0  # an all-padding row counts as a sequence with zero loss
    fast = algos.aggregate(loss, mask, mode, max_tokens=5).item()
    assert fast == pytest.approx(algos.aggregate_reference(loss, mask, mode, max_tokens=5), abs=1e-6)


@pytest.mark.parametrize("mode", sorted(algos.AGGREGATIONS))
def test_aggregation_over_shards_equals_whole_batch(mode):
    gen = _gen(1)
    loss = torch.randn(10, 7, generator=gen)
    mask = (torch.rand(10, 7, generator=gen) > 0.3).float()
    mask[:, 0] = 1
    whole = algos.aggregate(loss, mask, mode, max_tokens=7)
    denominator = algos.normaliser(mask, mode)
    rows = list(range(10))
    parts = [algos.aggregate(loss[idx], mask[idx], mode, max_tokens=7, denominator=denominator)
             for idx in split_micro(rows, 3)]  # uneven shards: 4, 3, 3 rows
    assert sum(parts).item() == pytest.approx(whole.item(), rel=1e-6)


# --------------------------------------------------------------------------- KL, entropy, log-probs


def test_kl_estimators_hand_computed():
    # logp = 0, ref = ln 2 -> d = ref - logp = ln 2 = 0.693147
    # k1 = -ln 2 ; k2 = 0.5 * (ln 2)^2 = 0.240227 ; k3 = e^(ln 2) - ln 2 - 1 = 2 - 0.693147 - 1 = 0.306853
    # second column logp = ref -> all three are 0
    logp = torch.tensor([[0.0, -1.0]])
    ref = torch.tensor([[math.log(2.0), -1.0]])
    ln2 = math.log(2.0)
    assert algos.KL["k1"](logp, ref).tolist() == [[pytest.approx(-ln2), 0.0]]
    assert algos.KL["k2"](logp, ref).tolist() == [[pytest.approx(0.5 * ln2**2), 0.0]]
    assert algos.KL["k3"](logp, ref).tolist() == [[pytest.approx(1 - ln2), 0.0]]


@pytest.mark.parametrize("kind", sorted(algos.KL))
def test_kl_matches_slow_reference(kind):
    gen = _gen(7)
    logp, ref = -torch.rand(3, 5, generator=gen) * 4, -torch.rand(3, 5, generator=gen) * 4
    assert torch.allclose(algos.KL[kind](logp, ref).double(), algos.kl_reference(logp, ref, kind), atol=1e-5)


def test_entropy_hand_computed():
    # uniform over 4 -> ln 4 = 1.386294
    # [ln 3, 0] -> p = [3/4, 1/4] -> -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.215762 + 0.346574 = 0.562335
    # [1000, 1000] -> ln 2 = 0.693147 (a naive exp would overflow to inf)
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, -1e4, -1e4], [1000.0, 1000.0, -1e4, -1e4]]])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert algos.entropy_from_logits(logits).tolist() == [[pytest.approx(math.log(4)), pytest.approx(h, abs=1e-6),
                                                           pytest.approx(math.log(2), abs=1e-6)]]
    # temperature 2 on [2 ln 3, 0] -> [ln 3, 0] -> the same 0.562335
    hot = torch.tensor([[[2 * math.log(3.0), 0.0]]])
    assert algos.entropy_from_logits(hot, temperature=2.0).item() == pytest.approx(h, abs=1e-6)


def test_entropy_matches_slow_reference():
    gen = _gen(8)
    logits = torch.randn(2, 3, 17, generator=gen) * 5
    fast = algos.entropy_from_logits(logits, temperature=0.7)
    assert torch.allclose(fast.double(), algos.entropy_reference(logits, temperature=0.7), atol=1e-5)


def test_token_logprobs_matches_log_softmax():
    gen = _gen(2)
    logits = torch.randn(2, 3, 11, generator=gen)
    targets = torch.randint(0, 11, (2, 3), generator=gen)
    ref = torch.log_softmax(logits / 0.7, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(algos.token_logprobs(logits, targets, temperature=0.7), ref, atol=1e-6)


# --------------------------------------------------------------------------- corrections, shaping


def test_tis_weights_hand_computed():
    # exp(old - rollout): [e^0, e^ln 2, e^ln 5] = [1, 2, 5] -> min(., cap 3) = [1, 2, 3]
    old = torch.tensor([[0.0, math.log(2.0), math.log(5.0)]], requires_grad=True)
    w = algos.tis_weights(old, torch.zeros(1, 3), cap=3.0)
    assert w.tolist() == [[pytest.approx(1.0), pytest.approx(2.0), pytest.approx(3.0)]]
    assert not w.requires_grad


def test_tis_weights_match_slow_reference():
    gen = _gen(9)
    old, rollout = -torch.rand(4, 6, generator=gen) * 2, -torch.rand(4, 6, generator=gen) * 2
    fast = algos.tis_weights(old, rollout, cap=2.0)
    assert torch.allclose(fast.double(), algos.tis_weights_reference(old, rollout, 2.0), atol=1e-6)


def test_overlong_penalty_hand_computed():
    # max 10, cache 4 -> free up to 10 - 4 = 6
    # L = 5, 6 -> 0 ; L = 7 -> (6 - 7)/4 = -0.25 ; L = 8 -> -2/4 = -0.5 ; L = 10 -> -4/4 = -1 ; L = 11 -> -1
    lengths = torch.tensor([5, 6, 7, 8, 10, 11])
    assert algos.overlong_penalty(lengths, 10, 4).tolist() == pytest.approx([0.0, 0.0, -0.25, -0.5, -1.0, -1.0])
    with pytest.raises(ValueError):
        algos.overlong_penalty(lengths, 10, 0)


def test_overlong_penalty_matches_slow_reference():
    lengths = torch.randint(0, 40, (50,), generator=_gen(10))
    assert algos.overlong_penalty(lengths, 32, 8).tolist() == pytest.approx(
        algos.overlong_penalty_reference(lengths, 32, 8).tolist())


def test_entropy_for_logging_equals_the_full_computation_chunk_by_chunk():
    logits = torch.randn(3, 7, 11) * 5
    chunked = algos.entropy_for_logging(logits, temperature=0.7, rows=4)  # 21 positions: 4+4+...+1
    assert not chunked.requires_grad and chunked.shape == (3, 7)
    torch.testing.assert_close(chunked, algos.entropy_from_logits(logits, temperature=0.7))
