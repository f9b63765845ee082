"""Group-relative advantage estimators (`ADVANTAGES`), each with a slow loop `*_reference`."""

from __future__ import annotations

import math

import torch


def _group_stats(rewards: torch.Tensor, group_ids: torch.Tensor):
    """Per-sample mean and population std of its group, plus group sizes (float64)."""
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    rewards = rewards.to(torch.float64)
    sums = torch.zeros(counts.numel(), dtype=torch.float64, device=rewards.device).index_add_(0, inverse, rewards)
    mean = sums / counts
    sq = torch.zeros_like(sums).index_add_(0, inverse, (rewards - mean[inverse]) ** 2)
    std = (sq / counts).sqrt()
    return mean[inverse], std[inverse], counts[inverse]


def grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-6, **_) -> torch.Tensor:
    """(r - group mean) / (group std + eps), std with unbiased=False.

    >>> grpo_advantages(torch.tensor([1., 0., 1., 1.]), torch.tensor([0, 0, 1, 1])).tolist()
    [0.99999..., -0.99999..., 0.0, 0.0]
    """
    mean, std, _ = _group_stats(rewards, group_ids)
    return ((rewards - mean) / (std + eps)).to(rewards.dtype)


def dr_grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, **_) -> torch.Tensor:
    """r - group mean (Dr. GRPO: no std normalisation)."""
    mean, _, _ = _group_stats(rewards, group_ids)
    return (rewards - mean).to(rewards.dtype)


def rloo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, **_) -> torch.Tensor:
    """r minus the mean of the *other* samples of its group; 0 for a group of one.

    r - (S - r)/(n - 1) = n/(n - 1) * (r - mean), which is what we compute.
    """
    mean, _, n = _group_stats(rewards, group_ids)
    n = n.to(torch.float64)
    scale = torch.where(n > 1, n / (n - 1).clamp(min=1), torch.zeros_like(n))
    return ((rewards - mean) * scale).to(rewards.dtype)


def reinforce_pp_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-6, **_) -> torch.Tensor:
    """REINFORCE++-baseline: c = r - group mean, then c / (std of c over the whole batch + eps)."""
    mean, _, _ = _group_stats(rewards, group_ids)
    centred = rewards.to(torch.float64) - mean
    return (centred / (centred.std(unbiased=False) + eps)).to(rewards.dtype)


def _groups(group_ids: torch.Tensor):
    for g in group_ids.unique().tolist():
        yield (group_ids == g).nonzero().flatten().tolist()


def grpo_advantages_reference(rewards: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """Slow, obviously-correct loop version of `grpo_advantages` (tests compare the two)."""
    out = torch.empty_like(rewards)
    for idx in _groups(group_ids):
        r = rewards[idx]
        out[idx] = (r - r.mean()) / (r.std(unbiased=False) + eps)
    return out


def dr_grpo_advantages_reference(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(rewards)
    for idx in _groups(group_ids):
        out[idx] = rewards[idx] - rewards[idx].mean()
    return out


def rloo_advantages_reference(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(rewards)
    for idx in _groups(group_ids):
        for i in idx:
            others = [rewards[j].item() for j in idx if j != i]
            out[i] = rewards[i].item() - sum(others) / len(others) if others else 0.0
    return out


def reinforce_pp_advantages_reference(rewards: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-6):
    centred = dr_grpo_advantages_reference(rewards.double(), group_ids).tolist()
    mu = sum(centred) / len(centred)
    std = math.sqrt(sum((c - mu) ** 2 for c in centred) / len(centred))
    return torch.tensor([c / (std + eps) for c in centred], dtype=rewards.dtype)


ADVANTAGES = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_pp": reinforce_pp_advantages,
}
# advantages that compare a sample with the rest of its group (need group size >= 2)
GROUP_ADVANTAGES = {"grpo", "dr_grpo", "rloo", "reinforce_pp"}


def uniform_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Bool mask of samples whose group has all-equal rewards (zero learning signal)."""
    _, std, _ = _group_stats(rewards, group_ids)
    return std == 0
