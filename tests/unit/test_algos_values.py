"""PPO's critic math (`rlvr.algos.values`): hand-computed values, and the fast paths against the loops."""

import math

import pytest
import torch

from rlvr import algos


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _random(seed, B=6, T=9):
    g = _gen(seed)
    mask = (torch.rand(B, T, generator=g) > 0.25).float()
    mask[0] = 0.0  # an all-masked row
    mask[1, :] = 1.0
    mask[2, 5:] = 0.0  # right padding
    values = torch.randn(B, T, generator=g)
    scores = torch.randn(B, generator=g)
    kl = torch.rand(B, T, generator=g)
    return mask, values, scores, kl


def test_terminal_rewards_hand_computed():
    # row 0: last sampled token is t=1 -> score 1 there; KL 0.5 * [0.1, 0.2] on t=0, 1; t=2 is masked (kl 5 ignored)
    #   -> [-0.05, 1 - 0.1, 0] = [-0.05, 0.9, 0]
    # row 1: an observation at t=1 (mask 0), last sampled t=2 -> score 2 at t=2, minus 0.5 * [0.0, -, 0.4]
    r = algos.terminal_rewards(torch.tensor([1.0, 2.0]), torch.tensor([[1.0, 1, 0], [1, 0, 1]]),
                               kl=torch.tensor([[0.1, 0.2, 5.0], [0.0, 3.0, 0.4]]), kl_coef=0.5)
    assert r.flatten().tolist() == pytest.approx([-0.05, 0.9, 0.0, 0.0, 0.0, 1.8])


def test_gae_hand_computed_gamma_lambda_one_is_return_minus_value():
    # rewards [0, 0, 1], V [0.5, 0.6, 0.8], gamma = lam = 1:
    # t=2: delta = 1 + 0 - 0.8 = 0.2 -> A = 0.2
    # t=1: delta = 0 + 0.8 - 0.6 = 0.2 -> A = 0.2 + 0.2 = 0.4
    # t=0: delta = 0 + 0.6 - 0.5 = 0.1 -> A = 0.1 + 0.4 = 0.5   (= R - V_t, R = 1 everywhere)
    adv, ret = algos.gae_advantages(torch.tensor([[0.0, 0, 1]]), torch.tensor([[0.5, 0.6, 0.8]]),
                                    torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([0.5, 0.4, 0.2])
    assert ret.tolist()[0] == pytest.approx([1.0, 1.0, 1.0])


def test_gae_skips_observation_tokens():
    # mask [1, 0, 1] (t=1 is a tool observation: its value 9 must not matter), rewards [0, 0, 1],
    # V [0.5, 9, 0.8], gamma 0.9, lam 0.5:
    # t=2: delta = 1 + 0.9 * 0 - 0.8 = 0.2 -> A = 0.2
    # t=1: skipped (A = 0, return 0)
    # t=0: next sampled token is t=2: delta = 0 + 0.9 * 0.8 - 0.5 = 0.22 -> A = 0.22 + 0.9 * 0.5 * 0.2 = 0.31
    # returns: A + V = [0.81, 0, 1.0]
    adv, ret = algos.gae_advantages(torch.tensor([[0.0, 0, 1]]), torch.tensor([[0.5, 9.0, 0.8]]),
                                    torch.tensor([[1.0, 0, 1]]), gamma=0.9, lam=0.5)
    assert adv.tolist()[0] == pytest.approx([0.31, 0.0, 0.2])
    assert ret.tolist()[0] == pytest.approx([0.81, 0.0, 1.0])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.99, 0.95), (0.5, 0.0)])
def test_gae_matches_reference(seed, gamma, lam):
    mask, values, scores, kl = _random(seed)
    rewards = algos.terminal_rewards(scores, mask, kl=kl, kl_coef=0.1)
    adv, ret = algos.TOKEN_ADVANTAGES["gae"](rewards, values, mask, gamma=gamma, lam=lam)
    ref_adv, ref_ret = algos.gae_advantages_reference(rewards, values, mask, gamma=gamma, lam=lam)
    assert torch.allclose(adv.double(), ref_adv, atol=1e-5)
    assert torch.allclose(ret.double(), ref_ret, atol=1e-5)
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()


def test_terminal_rewards_match_a_loop():
    mask, _, scores, kl = _random(5)
    r = algos.terminal_rewards(scores, mask, kl=kl, kl_coef=0.3)
    for b in range(mask.shape[0]):
        idx = [t for t in range(mask.shape[1]) if mask[b, t]]
        for t in range(mask.shape[1]):
            want = 0.0 if not mask[b, t] else -0.3 * kl[b, t].item() + (scores[b].item() if t == idx[-1] else 0.0)
            assert r[b, t].item() == pytest.approx(want, abs=1e-6)


def test_whitening_hand_computed():
    # sampled tokens: row 0 [1, 2], row 1 [3] (its second token masked)
    # batch: mean 2, population std sqrt((1 + 0 + 1) / 3) = 0.816497 -> [-1.224745, 0, 1.224745]
    # group (rows are groups 0 and 1): row 0 mean 1.5 std 0.5 -> [-1, 1]; row 1 alone: std 0 -> 0
    adv, mask, g = torch.tensor([[1.0, 2.0], [3.0, 7.0]]), torch.tensor([[1.0, 1], [1, 0]]), torch.tensor([0, 1])
    s = math.sqrt(2 / 3)
    assert algos.WHITENING["batch"](adv, mask, g, eps=0.0).flatten().tolist() == pytest.approx([-1 / s, 0, 1 / s, 0])
    assert algos.WHITENING["group"](adv, mask, g, eps=1e-6).flatten().tolist() == pytest.approx(
        [-0.5 / (0.5 + 1e-6), 0.5 / (0.5 + 1e-6), 0.0, 0.0])
    assert algos.WHITENING["none"](adv, mask, g).tolist() == [[1.0, 2.0], [3.0, 0.0]]


@pytest.mark.parametrize("mode", ["none", "batch", "group"])
def test_whitening_matches_reference(mode):
    mask, values, _, _ = _random(7)
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    out = algos.WHITENING[mode](values, mask, groups)
    assert torch.allclose(out.double(), algos.whiten_reference(values, mask, groups, mode), atol=1e-5)


def test_value_loss_hand_computed():
    # token 0: V 1.0, V_old 0.5, R 2, clip 0.2: (1 - 2)^2 = 1; V_clip = 0.5 + 0.2 = 0.7 -> (0.7 - 2)^2 = 1.69
    #          max = 1.69 (the clipped term: gradient cut) -> 0.5 * 1.69 = 0.845
    # token 1: V 0.4, V_old 0.5, R 0: change -0.1 is inside the clip -> both 0.16 -> 0.08, not clipped
    # token 2: masked -> 0.   clip_frac = 1 of 2 sampled tokens
    v, old, ret, mask = (torch.tensor([[1.0, 0.4, 9.0]]), torch.tensor([[0.5, 0.5, 0.0]]),
                         torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[1.0, 1, 0]]))
    loss, metrics = algos.value_loss(v, old, ret, mask, clip=0.2)
    assert loss.tolist()[0] == pytest.approx([0.845, 0.08, 0.0])
    assert metrics["clip_frac"] == 0.5
    # no clip: 0.5 * (V - R)^2 = [0.5, 0.08, 0]
    assert algos.value_loss(v, old, ret, mask)[0].tolist()[0] == pytest.approx([0.5, 0.08, 0.0])


@pytest.mark.parametrize("clip", [None, 0.2, 0.05])
def test_value_loss_matches_reference_and_gradient(clip):
    mask, values, scores, _ = _random(3)
    g = _gen(11)
    old = values + 0.3 * torch.randn(values.shape, generator=g)
    ret = torch.randn(values.shape, generator=g)
    v = values.clone().requires_grad_(True)
    loss, _ = algos.value_loss(v, old, ret, mask, clip=clip)
    assert torch.allclose(loss.double(), algos.value_loss_reference(values, old, ret, mask, clip=clip), atol=1e-5)
    loss.sum().backward()
    # the gradient is (V - R) where the unclipped term is the max, 0 where the clipped one wins (and off the mask)
    unclipped = (values - ret) ** 2
    v_clip = old + (values - old).clamp(-clip, clip) if clip is not None else values
    keep = (unclipped >= (v_clip - ret) ** 2) | torch.tensor(clip is None)
    assert torch.allclose(v.grad, (values - ret) * mask * keep, atol=1e-6)


def test_explained_variance_hand_computed_and_reference():
    # R [1, 0, 1, 0]: var 0.25; R - V = [0, 0, 0.5, -0.5]: mean 0, var 0.125 -> 1 - 0.125 / 0.25 = 0.5
    # (the fifth token is masked: its error 100 does not count)
    v, r = torch.tensor([[1.0, 0.0, 0.5, 0.5, 100.0]]), torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 1, 1, 0]])
    assert algos.explained_variance(v, r, mask) == pytest.approx(0.5)
    mask2, values, _, _ = _random(9)
    ret = values + torch.randn(values.shape, generator=_gen(2))
    assert algos.explained_variance(values, ret, mask2) == pytest.approx(
        algos.explained_variance_reference(values, ret, mask2), abs=1e-6)
    assert math.isnan(algos.explained_variance(v, torch.ones_like(v), mask))  # returns that do not vary


# --------------------------------------------------------------------------- per-token advantages in the policy losses


def _policy_inputs(seed, B=5, T=7):
    g = _gen(seed)
    logp = -torch.rand(B, T, generator=g) * 2
    old = logp + 0.3 * torch.randn(B, T, generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.2).float()
    return logp, old, mask, torch.randn(B, generator=g), torch.randn(B, T, generator=g)


@pytest.mark.parametrize("name", sorted(algos.POLICY_LOSSES))
def test_every_loss_takes_broadcast_token_advantages(name):
    # a [B] advantage and the same value on every token ([B, T]) give the same loss and gradient
    logp, old, mask, seq_adv, _ = _policy_inputs(1)
    out = []
    for adv in (seq_adv, seq_adv[:, None].expand_as(logp).clone()):
        lp = logp.clone().requires_grad_(True)
        loss, _ = algos.POLICY_LOSSES[name](lp, old, adv, mask)
        loss.sum().backward()
        out.append((loss.detach(), lp.grad))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-6) and torch.allclose(out[0][1], out[1][1], atol=1e-6)


@pytest.mark.parametrize("name,reference", [("ppo_clip", algos.ppo_clip_loss_reference),
                                            ("cispo", algos.cispo_loss_reference),
                                            ("sapo", algos.sapo_loss_reference)])
def test_token_losses_match_reference_with_token_advantages(name, reference):
    logp, old, mask, _, token_adv = _policy_inputs(2)
    loss, _ = algos.POLICY_LOSSES[name](logp, old, token_adv, mask)
    assert torch.allclose(loss.double(), reference(logp, old, token_adv, mask).detach().double(), atol=1e-5)


def test_ppo_clip_token_advantage_hand_computed():
    # one row, ratio exp(0) = 1 on both tokens, A = [2, -1] per token: loss = -A * 1 = [-2, 1]
    loss, _ = algos.ppo_clip_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[2.0, -1.0]]), torch.ones(1, 2))
    assert loss.tolist() == [[-2.0, 1.0]]
