"""From a step's scored rollouts to training samples and metrics: pure functions, no Ray.

Everything between the rewards and the trainer happens here: DAPO's group filter, reward
shaping (overlong penalty, KL in the reward), advantages, which samples are worth training
on, and the step's batch metrics. Each takes the recipe section it needs.
"""

from __future__ import annotations

import torch

from rlvr import algos
from rlvr.types import Completion, SampleReward, TrainSample


def keep_informative_groups(prompts, completions: list[Completion], rewards: list[SampleReward], room: int):
    """DAPO's dynamic-sampling filter: groups whose rewards are not all equal, at most `room` of them.

    Returns (prompts, completions, rewards) of the kept groups, prompt_index renumbered
    from 0, and how many groups were dropped for being uniform.
    """
    by_prompt: dict[int, list[int]] = {}
    for i, c in enumerate(completions):
        by_prompt.setdefault(c.prompt_index, []).append(i)
    kept_p, kept_c, kept_r, dropped = [], [], [], 0
    for p, idx in sorted(by_prompt.items()):
        if len({rewards[i].total for i in idx}) <= 1:
            dropped += 1
            continue
        if len(kept_p) == room:
            continue
        for i in idx:
            completions[i].prompt_index = len(kept_p)
            kept_c.append(completions[i])
            kept_r.append(rewards[i])
        kept_p.append(prompts[p])
    return kept_p, kept_c, kept_r, dropped


def shaped_rewards(completions: list[Completion], rewards: list[SampleReward], algo, max_tokens: int) -> torch.Tensor:
    """The verifiers' totals plus DAPO's overlong penalty when `algo.overlong` is on
    (`max_tokens`: `RolloutConfig.length_budget()`; an episode's length is its sampled tokens)."""
    totals = torch.tensor([r.total for r in rewards], dtype=torch.float32)
    ol = algo.overlong
    if ol.enabled:
        lengths = torch.tensor([c.num_sampled for c in completions], dtype=torch.float32)
        totals = totals + ol.weight * algos.overlong_penalty(lengths, max_tokens, ol.cache_len)
    return totals


def candidate_samples(prompts, completions: list[Completion]) -> list[TrainSample]:
    """Every completion as a TrainSample with a zero advantage (for reference-KL passes)."""
    return [TrainSample(p, t, 0.0, lp, m) for c in completions for p, t, lp, m in c.pieces(prompts[c.prompt_index].token_ids)]


def build_samples(prompts, completions: list[Completion], totals: torch.Tensor, algo):
    """Group advantages (`algo.advantage`), then the samples worth training on; returns
    (samples, metrics, per-completion advantages)."""
    totals = totals.to(torch.float32)
    groups = torch.tensor([c.prompt_index for c in completions], dtype=torch.long)
    advantages = algos.ADVANTAGES[algo.advantage](totals, groups, eps=algo.advantage_eps)
    uniform = algos.uniform_groups(totals, groups)
    keep = ~uniform if algo.skip_uniform_groups else torch.ones_like(uniform)
    samples = [TrainSample(p, t, float(a), lp, m)  # an agent episode's segments all get its advantage
               for c, a, k in zip(completions, advantages.tolist(), keep.tolist()) if k
               for p, t, lp, m in c.pieces(prompts[c.prompt_index].token_ids) if t]
    stats = {"groups/uniform_fraction": uniform.float().mean().item() if len(uniform) else 0.0,
             "samples/trained": len(samples),
             "advantage/abs_mean": advantages.abs().mean().item() if len(advantages) else 0.0}
    return samples, stats, advantages.tolist()


def scored_samples(prompts, completions: list[Completion]) -> tuple[list[TrainSample], list[int]]:
    """PPO: every completion's training sequences (an agent episode's segments each), advantage 0
    until GAE fills it in, and the completion each came from."""
    samples, owners = [], []
    for i, c in enumerate(completions):
        for p, t, lp, m in c.pieces(prompts[c.prompt_index].token_ids):
            if t:
                samples.append(TrainSample(p, t, 0.0, lp, m))
                owners.append(i)
    return samples, owners


def _padded(rows: list[list[float]], T: int) -> torch.Tensor:
    out = torch.zeros((len(rows), T), dtype=torch.float32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return out


def gae_samples(samples: list[TrainSample], owners: list[int], completions: list[Completion], totals: torch.Tensor,
                values: list[list[float]], algo):
    """PPO's advantages (`algo.advantage`: gae, `algo.gae`): each sequence's reward (its completion's
    total) on its last sampled token, GAE from the critic's `values` (observation tokens skipped),
    whitening; returns (samples with token_advantages / returns / values, metrics, per-completion
    mean token advantage)."""
    from dataclasses import replace

    groups = torch.tensor([c.prompt_index for c in completions], dtype=torch.long)
    uniform = algos.uniform_groups(totals.to(torch.float32), groups) if len(completions) else torch.zeros(0, dtype=torch.bool)
    stats = {"groups/uniform_fraction": uniform.float().mean().item() if len(uniform) else 0.0,
             "samples/trained": len(samples)}
    if not samples:
        return [], {**stats, "advantage/abs_mean": 0.0}, [0.0] * len(completions)
    T = max(len(s.completion_ids) for s in samples)
    mask = _padded([s.loss_mask if s.loss_mask is not None else [1.0] * len(s.completion_ids) for s in samples], T)
    V = _padded(values, T) * mask
    rewards = algos.terminal_rewards(totals.to(torch.float32)[owners], mask)
    adv, ret = algos.TOKEN_ADVANTAGES[algo.advantage](rewards, V, mask, gamma=algo.gae.gamma, lam=algo.gae.lam)
    adv = algos.WHITENING[algo.gae.whiten](adv, mask, groups[owners], eps=algo.advantage_eps)
    out = [replace(s, token_advantages=adv[i, :n].tolist(), returns=ret[i, :n].tolist(), values=V[i, :n].tolist())
           for i, (s, n) in enumerate((s, len(s.completion_ids)) for s in samples)]
    per_completion = torch.zeros(len(completions)).index_add_(0, torch.tensor(owners), adv.sum(-1))
    counts = torch.zeros(len(completions)).index_add_(0, torch.tensor(owners), mask.sum(-1)).clamp(min=1)
    stats.update({"advantage/abs_mean": ((adv.abs() * mask).sum() / mask.sum().clamp(min=1)).item(),
                  "critic/explained_variance": algos.explained_variance(V, ret, mask),
                  "critic/returns_mean": ((ret * mask).sum() / mask.sum().clamp(min=1)).item()})
    return out, stats, (per_completion / counts).tolist()


def mean_staleness(completions: list[Completion], trainer_version: int) -> float:
    """How many updates behind the trainer the generating weights were, on average (0: on-policy)."""
    if not completions:
        return 0.0
    return sum(trainer_version - c.weight_version for c in completions) / len(completions)


def batch_metrics(completions: list[Completion], rewards: list[SampleReward], primary: str) -> dict:
    """Reward, accuracy and length statistics of everything generated this step (`primary`: the
    verifier whose score >= 1 means correct), and `multi_turn/*` for episodes."""
    from rlvr.reward.worker import reward_metrics
    from rlvr.rollout.episodes import episode_metrics

    # a batch can be empty: every agent episode of the step dropped (all statistics 0 then)
    totals = torch.tensor([r.total for r in rewards] or [0.0], dtype=torch.float32)
    lengths = torch.tensor([c.num_sampled for c in completions] or [0], dtype=torch.float32)  # episodes: sampled tokens
    n = max(1, len(rewards))
    return {
        "reward/mean": totals.mean().item(),
        "reward/std": totals.std(unbiased=False).item(),
        "accuracy": sum(r.scores.get(primary, 0.0) >= 1.0 for r in rewards) / n,
        "response_length/mean": lengths.mean().item(),
        "response_length/max": lengths.max().item(),
        "response/clipped_fraction": sum(c.finish_reason == "length" for c in completions) / n,
        "tokens/generated": int(lengths.sum().item()),
        **reward_metrics(rewards),
        **episode_metrics(completions),
    }


def step_seed(run_seed: int, step: int) -> int:
    """The sampling seed of a step's rollouts (each prompt adds its index): a step samples the
    same completions from the same weights however the run got there (resumed or not).

    >>> step_seed(0, 1), step_seed(0, 2), step_seed(1, 1)
    (10007, 20014, 1000010007)
    """
    return (run_seed * 1_000_000_000 + step * 10_007) % (2**31 - 1)
