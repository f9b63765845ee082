"""PPO's step between the rewards and the trainers (`rlvr.loop.samples.scored_samples`, `gae_samples`): pure."""

import pytest
import torch

from rlvr.config import AlgorithmConfig
from rlvr.loop.samples import gae_samples, scored_samples
from rlvr.types import Completion, Prompt


def _completion(prompt_index, n, mask=None):
    return Completion(prompt_index, list(range(10, 10 + n)), [-0.5] * n, "", "stop", mask=mask)


def test_gae_samples_hand_computed_with_an_observation_token():
    prompts = [Prompt("a", [1, 2], "x"), Prompt("b", [3], "y")]
    # completion 0: 3 tokens, the middle one a tool observation; completion 1: 2 tokens; completion 2: empty (dropped)
    completions = [_completion(0, 3, mask=[1, 0, 1]), _completion(1, 2), _completion(1, 0)]
    samples, owners = scored_samples(prompts, completions)
    assert owners == [0, 1] and [s.prompt_ids for s in samples] == [[1, 2], [3]]
    values = [[0.5, 9.0, 0.8], [0.25, 0.5]]
    algo = AlgorithmConfig(advantage="gae")
    algo.gae.gamma, algo.gae.lam, algo.gae.whiten = 1.0, 1.0, "none"
    out, stats, per_completion = gae_samples(samples, owners, completions, torch.tensor([1.0, 0.0, 0.0]), values, algo)
    # gamma = lam = 1: A_t = R - V_t on sampled tokens. Row 0: R = 1 -> [0.5, -, 0.2]; row 1: R = 0 -> [-0.25, -0.5]
    assert out[0].token_advantages == pytest.approx([0.5, 0.0, 0.2])
    assert out[0].returns == pytest.approx([1.0, 0.0, 1.0]) and out[0].values == pytest.approx([0.5, 0.0, 0.8])
    assert out[1].token_advantages == pytest.approx([-0.25, -0.5]) and out[1].returns == pytest.approx([0.0, 0.0])
    # per completion: the mean over its sampled tokens (0.35, -0.375), 0 for the empty one
    assert per_completion == pytest.approx([0.35, -0.375, 0.0])
    # explained variance over the 4 sampled tokens: R [1, 1, 0, 0] var 0.25; R - V [0.5, 0.2, -0.25, -0.5]:
    # mean -0.0125, var = (0.5125^2 + 0.2125^2 + 0.2375^2 + 0.4875^2) / 4 = 0.150469 -> 1 - 0.601875 = 0.398125
    assert stats["critic/explained_variance"] == pytest.approx(0.398125, abs=1e-6)
    assert stats["samples/trained"] == 2 and stats["advantage/abs_mean"] == pytest.approx((0.5 + 0.2 + 0.25 + 0.5) / 4)


def test_gae_samples_whiten_and_empty():
    prompts = [Prompt("a", [1], "x")]
    completions = [_completion(0, 2), _completion(0, 3)]
    samples, owners = scored_samples(prompts, completions)
    algo = AlgorithmConfig(advantage="gae")  # whiten: batch
    out, _, _ = gae_samples(samples, owners, completions, torch.tensor([1.0, 0.0]), [[0.1, 0.2], [0.3, 0.1, 0.0]], algo)
    adv = [a for s in out for a in s.token_advantages]
    assert sum(adv) == pytest.approx(0.0, abs=1e-5) and torch.tensor(adv).std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    assert gae_samples([], [], [], torch.zeros(0), [], algo)[0] == []
