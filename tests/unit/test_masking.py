"""Loss masking of multi-turn episodes: only sampled tokens carry loss and count in every
aggregation's normaliser; observation tokens are context only. Through the trainer's own
batch layouts and logits (`rlvr.trainer.batch`, `rlvr.trainer.worker.completion_logits`) on
the tiny architecture with random weights, with every policy loss and aggregation."""

from __future__ import annotations

import pytest
import torch

from rlvr import algos
from rlvr.trainer.batch import collate, collate_shared
from rlvr.trainer.worker import completion_logits
from rlvr.types import TrainSample

PROMPT, TURN1, TURN2 = [5, 6, 7, 8, 9], [10, 11, 12], [13, 14]
OBS_A, OBS_B = [20, 21, 22, 23], [30, 31, 32, 33]
MAX_TOKENS = 16


def episode(obs, advantage, turn2=TURN2) -> TrainSample:
    ids = TURN1 + obs + turn2
    mask = [1] * len(TURN1) + [0] * len(obs) + [1] * len(turn2)
    return TrainSample(PROMPT, ids, advantage, [-1.0] * len(ids), mask)


@pytest.fixture(scope="module")
def model(random_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(random_model_dir, dtype=torch.float32).eval()


def per_token_loss(model, samples, layout, loss):
    batch = collate(samples, 0) if layout == "padded" else collate_shared(samples, 0, always=True)
    logits = completion_logits(model, batch, "cpu")
    logits.retain_grad()
    logp = algos.token_logprobs(logits, batch["targets"])
    old = logp.detach()  # on-policy: ratio 1, inside every clip range
    tokens, _ = algos.POLICY_LOSSES[loss](logp, old, batch["advantages"], batch["completion_mask"])
    return tokens, batch["completion_mask"], logits, logp


@pytest.mark.parametrize("layout", ["padded", "shared"])
@pytest.mark.parametrize("loss", sorted(algos.POLICY_LOSSES))
@pytest.mark.parametrize("aggregation", sorted(algos.AGGREGATIONS))
def test_observation_tokens_get_no_gradient(model, layout, loss, aggregation):
    samples = [episode(OBS_A, 1.0), episode(OBS_A, -0.5, [15, 16, 17])]
    tokens, mask, logits, _ = per_token_loss(model, samples, layout, loss)
    denominator = algos.normaliser([s.num_loss_tokens for s in samples], aggregation)
    algos.aggregate(tokens * mask, mask, aggregation, max_tokens=MAX_TOKENS, denominator=denominator).backward()
    grad = logits.grad.abs().sum(-1)  # [B, T]
    assert torch.all(grad[mask == 0] == 0)  # observations and padding: no loss term at all
    assert torch.all(grad[mask == 1] > 0)  # every sampled token: one


@pytest.mark.parametrize("layout", ["padded", "shared"])
def test_an_observation_changes_later_terms_only_through_attention(model, layout):
    """A token's loss term is -A * ratio(logp_t): it moves with the observation only if logp_t does."""
    a, _, _, logp_a = per_token_loss(model, [episode(OBS_A, 1.0), episode(OBS_A, 1.0)], layout, "ppo_clip")
    b, mask, _, logp_b = per_token_loss(model, [episode(OBS_B, 1.0), episode(OBS_B, 1.0)], layout, "ppo_clip")
    before, obs = len(TURN1), slice(len(TURN1), len(TURN1) + len(OBS_A))
    # the observation itself: no term either way
    assert torch.all((a * mask)[:, obs] == 0) and torch.all((b * mask)[:, obs] == 0)
    # the turn before it: the same log-probs (causal attention)
    torch.testing.assert_close(logp_a[:, :before], logp_b[:, :before])
    # the turn after it sees a different context: its log-probs (so its terms' gradients) differ
    assert not torch.allclose(logp_a[:, obs.stop:], logp_b[:, obs.stop:])


def test_normalisers_count_sampled_tokens_only():
    samples = [episode(OBS_A, 1.0), episode(OBS_A + [24, 25], 1.0, [15, 16, 17])]
    assert [s.num_loss_tokens for s in samples] == [5, 6]
    assert algos.normaliser([s.num_loss_tokens for s in samples], "token_mean") == 11
    assert algos.normaliser([s.num_loss_tokens for s in samples], "seq_mean_token_mean") == 2
    batch = collate(samples, 0)
    mask = batch["completion_mask"]
    assert mask.sum().item() == 11 and batch["completion_tokens"].sum().item() == 9 + 12
    ones = torch.ones_like(mask)
    # token_mean of a loss of 1 on every position is 1; seq_mean_token_mean too (each row's mean is
    # over its sampled tokens); seq_mean_token_sum_norm is each row's sampled-token count / max_tokens
    assert algos.aggregate(ones * mask, mask, "token_mean").item() == pytest.approx(1.0)
    assert algos.aggregate(ones * mask, mask, "seq_mean_token_mean").item() == pytest.approx(1.0)
    got = algos.aggregate(ones * mask, mask, "seq_mean_token_sum_norm", max_tokens=MAX_TOKENS).item()
    assert got == pytest.approx((5 + 6) / MAX_TOKENS / 2)
    # attention sees every token of the episode, observations included
    assert batch["attention_mask"][:, -batch["completion_tokens"].shape[1]:].sum().item() == 21
