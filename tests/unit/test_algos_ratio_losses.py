"""CISPO, GMPO and SAPO: hand-computed values and gradients, fast paths against slow references."""

import math

import pytest
import torch

from rlvr import algos
from tests.unit.test_algos import _random_policy_batch

E05, EM05 = math.exp(0.5), math.exp(-0.5)  # 1.648721, 0.606531


# --------------------------------------------------------------------------- CISPO


def test_cispo_hand_computed_and_gradient_is_detached_weight():
    # ratios exp(logp - 0) = [1.648721, 0.606531]; A = 2; clip_low 1 (no lower bound), clip_high 0.28
    # weights: min(1.648721, 1.28) = 1.28 ; 0.606531 (no lower bound)
    # loss = -w * A * logp: -1.28 * 2 * 0.5 = -1.28 ; -0.606531 * 2 * -0.5 = +0.606531
    logp = torch.tensor([[0.5, -0.5, 3.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, m = algos.cispo_loss(logp, torch.zeros(1, 3), torch.tensor([2.0]), mask, clip_low=1.0, clip_high=0.28)
    assert loss.tolist()[0] == pytest.approx([-1.28, EM05, 0.0], abs=1e-5)
    assert m["clip_fraction"] == pytest.approx(1 / 2)  # token 0's weight clipped
    # gradient = -sg(w) * A * d logp: the weight does not depend on logp in the backward pass
    # -1.28 * 2 = -2.56 ; -0.606531 * 2 = -1.213061 ; masked 0 (the clipped token still has a gradient)
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    assert grad.tolist()[0] == pytest.approx([-2.56, -2 * EM05, 0.0], abs=1e-5)
    # with a lower bound 1 - 0.2 = 0.8: token 1's weight 0.8 -> loss -0.8 * 2 * -0.5 = 0.8
    low, _ = algos.cispo_loss(logp, torch.zeros(1, 3), torch.tensor([2.0]), mask, clip_low=0.2, clip_high=0.28)
    assert low[0, 1].item() == pytest.approx(0.8)


def test_cispo_on_policy_is_reinforce():
    # old_logp = logp (one update per step): w = 1, the gradient is -A * d logp
    logp, _, adv, mask = _random_policy_batch(7)
    x = logp.clone().requires_grad_(True)
    loss, m = algos.cispo_loss(x, x.detach(), adv, mask)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert torch.allclose(grad, -adv.unsqueeze(-1) * mask) and m["clip_fraction"] == 0.0


@pytest.mark.parametrize("opts", [{}, {"clip_low": 0.2, "clip_high": 0.1}])
def test_cispo_matches_slow_reference_value_and_gradient(opts):
    logp, old, adv, mask = _random_policy_batch(8)
    x_fast, x_ref = logp.clone().requires_grad_(True), logp.clone().requires_grad_(True)
    fast, _ = algos.cispo_loss(x_fast, old, adv, mask, **opts)
    ref = algos.cispo_loss_reference(x_ref, old, adv, mask, **opts)
    assert torch.allclose(fast, ref, atol=1e-5)
    (g_fast,) = torch.autograd.grad(fast.sum(), x_fast)
    (g_ref,) = torch.autograd.grad(ref.sum(), x_ref)
    assert g_fast.abs().sum() > 0 and torch.allclose(g_fast, g_ref, atol=1e-6)


# --------------------------------------------------------------------------- GMPO


def test_gmpo_hand_computed():
    # row 0, A = +1: log-ratios [0.5, -0.1, 0.2] -> min(l, clip(l, -0.4, 0.4)) = [0.4, -0.1, 0.2]
    #   mean 0.5 / 3 = 0.166667 -> s = e^0.166667 = 1.181360 ; loss -1 * s per valid token
    # row 1, A = -1: log-ratios [0.5, -0.6, 0.2] -> max(l, clip(l)) = [0.5, -0.4, 0.2]
    #   mean 0.3 / 3 = 0.1 -> s = e^0.1 = 1.105171 ; loss +s per valid token
    logp = torch.tensor([[0.5, -0.1, 0.2, 9.0], [0.5, -0.6, 0.2, 9.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    loss, m = algos.gmpo_loss(logp, torch.zeros(2, 4), torch.tensor([1.0, -1.0]), mask, clip_low=0.4, clip_high=0.4)
    s0, s1 = math.exp(0.5 / 3), math.exp(0.1)
    assert loss.tolist() == [pytest.approx(v, abs=1e-5) for v in ([-s0] * 3 + [0.0], [s1] * 3 + [0.0])]
    assert m["clip_fraction"] == pytest.approx(2 / 6)  # row 0 token 0, row 1 token 1
    # token form: d loss[i, t] / d logp[i, t] = -A_i * s_i, 0 where the clipped side was taken
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    assert grad.tolist() == [pytest.approx(v, abs=1e-5) for v in ([0.0, -s0, -s0, 0.0], [s1, 0.0, s1, 0.0])]


@pytest.mark.parametrize("mode", sorted(algos.AGGREGATIONS))
def test_gmpo_matches_sequence_form_reference(mode):
    # value per token equal; gradient equal once aggregated (each mode weighs a row's tokens equally)
    logp, old, adv, mask = _random_policy_batch(9)
    opts = {"clip_low": 0.2, "clip_high": 0.3}  # some tokens clipped, some not
    x_fast, x_ref = logp.clone().requires_grad_(True), logp.clone().requires_grad_(True)
    fast, m = algos.gmpo_loss(x_fast, old, adv, mask, **opts)
    ref = algos.gmpo_loss_reference(x_ref, old, adv, mask, **opts)
    assert 0 < m["clip_fraction"] < 1
    assert torch.allclose(fast, ref, atol=1e-5)
    # the reference's tokens each carry the whole sequence objective (|y_i| copies of it), the token
    # form's carry sg[s_i] * exp(c_t - sg[c_t]): summed over a row both give |y_i| * d(-A_i s_i)
    (g_fast,) = torch.autograd.grad(algos.aggregate(fast, mask, mode, max_tokens=9), x_fast)
    (g_ref,) = torch.autograd.grad(algos.aggregate(ref, mask, mode, max_tokens=9), x_ref)
    assert g_fast.abs().sum() > 0 and torch.allclose(g_fast, g_ref, atol=1e-6)


# --------------------------------------------------------------------------- SAPO


def test_sapo_hand_computed():
    # row 0, A = +1, tau_pos = 1: r = [1, e^0.5 = 1.648721]
    #   f(1) = 4/1 * sigmoid(0) = 2 -> loss -2 ; f(1.648721) = 4 * sigmoid(0.648721) = 4 * 0.656721 = 2.626883
    # row 1, A = -2, tau_neg = 2: r = [1, e^-0.5 = 0.606531]
    #   f(1) = 4/2 * 0.5 = 1 -> loss +2 ; f(0.606531) = 2 * sigmoid(2 * -0.393469) = 2 * 0.312813 = 0.625626 -> +1.251252
    logp = torch.tensor([[0.0, 0.5], [0.0, -0.5]], requires_grad=True)
    mask = torch.ones(2, 2)
    loss, m = algos.sapo_loss(logp, torch.zeros(2, 2), torch.tensor([1.0, -2.0]), mask, tau_pos=1.0, tau_neg=2.0)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert loss.tolist() == [pytest.approx(v, abs=1e-5) for v in
                             ([-2.0, -4 * sig(EM05 * 0 + E05 - 1)], [2.0, 2 * 2 * sig(2 * (EM05 - 1))])]
    # gradient: -A * 4 sigmoid(x)(1 - sigmoid(x)) * r, x = tau (r - 1)
    # on-policy tokens (r = 1): w = 1 -> -A ; row 0 token 1: -4 * 0.656721 * 0.343279 * 1.648721
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    w01 = 4 * sig(E05 - 1) * (1 - sig(E05 - 1))
    w11 = 4 * sig(2 * (EM05 - 1)) * (1 - sig(2 * (EM05 - 1)))
    assert grad.tolist() == [pytest.approx(v, abs=1e-5) for v in ([-1.0, -w01 * E05], [2.0, 2.0 * w11 * EM05])]
    assert m["gate_weight"] == pytest.approx((1 + w01 + 1 + w11) / 4, abs=1e-6)


def test_sapo_matches_slow_reference():
    logp, old, adv, mask = _random_policy_batch(10)
    for opts in ({}, {"tau_pos": 0.5, "tau_neg": 3.0}):
        fast, _ = algos.sapo_loss(logp, old, adv, mask, **opts)
        assert torch.allclose(fast.double(), algos.sapo_loss_reference(logp, old, adv, mask, **opts), atol=1e-5)


def test_new_losses_are_registered():
    assert {"cispo": algos.cispo_loss, "gmpo": algos.gmpo_loss, "sapo": algos.sapo_loss}.items() \
        <= algos.POLICY_LOSSES.items()
