"""Pure step logic between rewards and the trainer: DAPO's group filter, shaping, samples."""

import pytest
import torch

from rlvr import algos
from rlvr.config import AlgorithmConfig, OverlongConfig
from rlvr.loop.samples import build_samples, keep_informative_groups, shaped_rewards
from rlvr.types import Completion, Prompt, SampleReward


def make(prompt_rewards: list[list[float]], lengths: int = 2):
    prompts, completions, rewards = [], [], []
    for p, rs in enumerate(prompt_rewards):
        prompts.append(f"prompt{p}")
        for r in rs:
            completions.append(Completion(p, [7] * lengths, [-0.5] * lengths, "x", "stop"))
            rewards.append(SampleReward(r, {"math": r}, {}))
    return prompts, completions, rewards


def test_dynamic_sampling_keeps_mixed_groups_up_to_room():
    # groups: [1,1] uniform, [0,1] mixed, [0,0] uniform, [1,0] mixed, [0,1] mixed; room for 2
    prompts, completions, rewards = make([[1, 1], [0, 1], [0, 0], [1, 0], [0, 1]])
    kept_p, kept_c, kept_r, dropped = keep_informative_groups(prompts, completions, rewards, room=2)
    assert kept_p == ["prompt1", "prompt3"]
    assert [c.prompt_index for c in kept_c] == [0, 0, 1, 1]
    assert [r.total for r in kept_r] == [0, 1, 1, 0]
    assert dropped == 2


def test_overlong_penalty_shapes_only_when_enabled():
    algo = AlgorithmConfig(overlong=OverlongConfig(enabled=True, cache_len=2))
    prompts, completions, rewards = make([[1, 1, 1]])
    for c, n in zip(completions, [4, 5, 6]):
        c.token_ids = [7] * n
    # max 6, cache 2: L=4 -> 0; L=5 -> (4 - 5) / 2 = -0.5; L=6 -> (4 - 6) / 2 = -1
    assert shaped_rewards(completions, rewards, algo, max_tokens=6).tolist() == pytest.approx([1.0, 0.5, 0.0])
    plain = AlgorithmConfig()
    assert shaped_rewards(completions, rewards, plain, max_tokens=6).tolist() == [1.0, 1.0, 1.0]


def test_build_samples_skips_uniform_groups_and_normalises():
    algo = AlgorithmConfig()
    prompts, completions, rewards = make([[1, 0, 0, 1], [1, 1, 1, 1]])
    rendered = [Prompt("q", [1, 2], "a"), Prompt("q", [1, 2], "a")]
    samples, stats, advantages = build_samples(rendered, completions, torch.tensor([r.total for r in rewards]), algo)
    # group 0: mean .5, std .5 -> advantages +-1 (eps aside); group 1 is uniform and skipped
    assert [round(s.advantage, 4) for s in samples] == [1.0, -1.0, -1.0, 1.0]
    assert [round(a, 4) for a in advantages] == [1.0, -1.0, -1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert stats["groups/uniform_fraction"] == 0.5 and stats["samples/trained"] == 4
    lengths = [len(s.completion_ids) for s in samples]
    assert algos.normaliser(lengths, "token_mean") == 8.0 and algos.normaliser(lengths, "seq_mean_token_mean") == 4.0
