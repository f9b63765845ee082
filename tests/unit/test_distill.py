"""On-policy distillation (`rlvr.algos.distill`, `algorithm.preset: distill`): the per-token
advantage, the losses that take per-token advantages, and the recipe checks."""

from __future__ import annotations

import pytest
import torch

from rlvr import algos
from rlvr.algos.losses import TOKEN_ADVANTAGE_LOSSES
from rlvr.config import load_recipe
from rlvr.config.checks import RecipeError


def test_distill_advantage_by_hand():
    adv = torch.tensor([0.5, -1.0])
    teacher = torch.tensor([[-0.1, -2.0], [-1.0, -0.5]])
    student = torch.tensor([[-0.6, -1.0], [-1.0, -3.0]], requires_grad=True)
    out = algos.distill_advantages(adv, teacher, student, coef=2.0, reward_weight=0.5)
    # row 0: 0.5*0.5 + 2*(-0.1+0.6) = 0.25 + 1.0 = 1.25;  0.25 + 2*(-2.0+1.0) = 0.25 - 2.0 = -1.75
    # row 1: 0.5*-1 + 2*(-1.0+1.0) = -0.5;               -0.5 + 2*(-0.5+3.0) = -0.5 + 5.0 = 4.5
    assert out.tolist() == [[1.25, -1.75], [-0.5, 4.5]]
    assert not out.requires_grad  # the student's log-probs enter detached: an advantage, not a loss


def test_distill_advantage_equals_its_loop_reference():
    g = torch.Generator().manual_seed(0)
    adv, teacher, student = torch.randn(5, generator=g), -torch.rand(5, 7, generator=g), -torch.rand(5, 7, generator=g)
    fast = algos.distill_advantages(adv, teacher, student, coef=0.7, reward_weight=0.3)
    slow = algos.distill_advantages_reference(adv, teacher, student, coef=0.7, reward_weight=0.3)
    torch.testing.assert_close(fast.double(), slow)


@pytest.mark.parametrize("name", TOKEN_ADVANTAGE_LOSSES)
def test_losses_take_per_token_advantages(name):
    """[B, T] advantages: equal to the loop reference token by token, and a [B, T] made of
    each row's constant gives exactly the [B] result (the broadcast is the only difference)."""
    g = torch.Generator().manual_seed(1)
    logp, old = -torch.rand(4, 6, generator=g), -torch.rand(4, 6, generator=g)
    mask = (torch.rand(4, 6, generator=g) > 0.2).float()
    per_token = torch.randn(4, 6, generator=g)
    loss, _ = algos.POLICY_LOSSES[name](logp, old, per_token, mask)
    from rlvr.algos import losses

    reference_fn = getattr(losses, f"{name}_loss_reference")
    reference = reference_fn(logp, per_token, mask) if name == "nll" else reference_fn(logp, old, per_token, mask)
    torch.testing.assert_close((loss * mask).double(), (reference * mask).double(), atol=1e-6, rtol=1e-6)
    seq = torch.randn(4, generator=g)
    by_seq, _ = algos.POLICY_LOSSES[name](logp, old, seq, mask)
    by_token, _ = algos.POLICY_LOSSES[name](logp, old, seq.unsqueeze(-1).expand(4, 6), mask)
    assert torch.equal(by_seq, by_token)


def test_reverse_kl_gradient_pulls_the_student_towards_the_teacher():
    """On-policy (ratio 1), the ppo_clip loss with distillation advantages has the gradient
    sum_t (log pi_S - log pi_T) d log pi_S: a token the student over-rates is pushed down."""
    logp = torch.tensor([[-0.2, -3.0]], requires_grad=True)
    teacher = torch.tensor([[-1.2, -1.0]])
    adv = algos.distill_advantages(torch.zeros(1), teacher, logp, coef=1.0, reward_weight=0.0)
    loss, _ = algos.POLICY_LOSSES["ppo_clip"](logp, logp.detach(), adv, torch.ones(1, 2))
    loss.sum().backward()
    # d/d logp of -(ratio * A) at ratio 1 is -A: A = (-1.2+0.2, -1.0+3.0) = (-1.0, 2.0) -> grad (1.0, -2.0)
    assert logp.grad.tolist() == [[1.0, -2.0]]


def _recipe(*overrides):
    return load_recipe("recipes/tiny-cpu.yaml", list(overrides))


def test_the_distill_preset_needs_a_teacher_and_a_per_token_loss(tmp_path):
    with pytest.raises(RecipeError, match="teacher.path"):
        _recipe("algorithm.preset=distill")
    with pytest.raises(RecipeError, match="teacher.path"):
        _recipe("algorithm.preset=distill", f"teacher.path={tmp_path}/missing")
    with pytest.raises(RecipeError, match="teacher.path"):
        _recipe("algorithm.preset=distill", "teacher.path=builtin:tiny")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    cfg = _recipe("algorithm.preset=distill", f"teacher.path={tmp_path}")
    a = cfg.algorithm
    assert (a.distill_coef, a.reward_weight, a.skip_uniform_groups, a.kl.coef) == (1.0, 0.0, False, 0.0)
    with pytest.raises(RecipeError, match="algorithm.loss"):
        _recipe("algorithm.preset=distill", f"teacher.path={tmp_path}", "algorithm.loss=gspo")
    mixed = _recipe("algorithm.preset=distill", f"teacher.path={tmp_path}", "algorithm.reward_weight=1.0")
    assert mixed.algorithm.reward_weight == 1.0  # the recipe's own keys override the preset's
