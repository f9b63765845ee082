"""RL algorithms as pure tensor functions: advantages, policy losses, loss aggregation.

No Ray, no config objects: tensors in, tensors out. Variants live in plain dicts
(`ADVANTAGES`, `POLICY_LOSSES`, `AGGREGATIONS`) with one signature each, and every
call site goes through the dicts.

Where we depart from the papers:
- GRPO (Shao et al. 2024) normalises by the group std; we use the population std
  (unbiased=False) plus eps, as verl and TRL do, so a group of two is defined.
- No KL term in the loss (beta = 0), following DAPO / Dr. GRPO practice for RLVR.
- The ratio uses the trainer's own log-probs of the behaviour policy (`old_logp`),
  not the engine's sampling log-probs, so engine/trainer numerics do not bias it;
  their gap is reported as a metric instead.
"""

from __future__ import annotations

import torch

# --------------------------------------------------------------------------- advantages


def _group_stats(rewards: torch.Tensor, group_ids: torch.Tensor):
    """Per-sample mean and population std of its group, plus group sizes."""
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    rewards = rewards.to(torch.float64)
    sums = torch.zeros(counts.numel(), dtype=torch.float64).index_add_(0, inverse, rewards)
    mean = sums / counts
    sq = torch.zeros_like(sums).index_add_(0, inverse, (rewards - mean[inverse]) ** 2)
    std = (sq / counts).sqrt()
    return mean[inverse], std[inverse], counts[inverse]


def grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-6, **_) -> torch.Tensor:
    """(r - group mean) / (group std + eps), std with unbiased=False.

    >>> grpo_advantages(torch.tensor([1., 0., 1., 1.]), torch.tensor([0, 0, 1, 1])).tolist()
    [0.999998..., -0.999998..., 0.0, 0.0]
    """
    mean, std, _ = _group_stats(rewards, group_ids)
    return ((rewards - mean) / (std + eps)).to(rewards.dtype)


def dr_grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, **_) -> torch.Tensor:
    """r - group mean (Dr. GRPO: no std normalisation)."""
    mean, _, _ = _group_stats(rewards, group_ids)
    return (rewards - mean).to(rewards.dtype)


def grpo_advantages_reference(rewards: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """Slow, obviously-correct loop version of `grpo_advantages` (tests compare the two)."""
    out = torch.empty_like(rewards)
    for g in group_ids.unique():
        idx = (group_ids == g).nonzero().flatten()
        r = rewards[idx]
        out[idx] = (r - r.mean()) / (r.std(unbiased=False) + eps)
    return out


ADVANTAGES = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
}
# advantages that compare a sample with the rest of its group (need group size >= 2)
GROUP_ADVANTAGES = {"grpo", "dr_grpo"}


def uniform_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Bool mask of samples whose group has all-equal rewards (zero learning signal)."""
    _, std, _ = _group_stats(rewards, group_ids)
    return std == 0


# --------------------------------------------------------------------------- policy losses


def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    **_,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token clipped surrogate: -min(ratio*A, clip(ratio, 1-clip_low, 1+clip_high)*A).

    `logp`, `old_logp`, `mask` are [B, T]; `advantages` is [B]. Returns the [B, T]
    per-token loss (zero where mask is 0) and float metrics.
    """
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype).unsqueeze(-1)
    log_ratio = (logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    loss = -torch.minimum(unclipped, clipped) * mask
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        clip_fraction = (((clipped < unclipped).to(logp.dtype)) * mask).sum() / n
        approx_kl = (((ratio - 1) - log_ratio) * mask).sum() / n  # k3 estimator of KL(old || new)
    return loss, {"clip_fraction": clip_fraction.item(), "approx_kl": approx_kl.item()}


POLICY_LOSSES = {
    "ppo_clip": ppo_clip_loss,
}

# --------------------------------------------------------------------------- aggregation


def aggregate(loss_tokens: torch.Tensor, mask: torch.Tensor, mode: str, *, denominator: float | None = None) -> torch.Tensor:
    """Reduce a [B, T] per-token loss to a scalar.

    `token_mean`: sum over valid tokens / their count.
    `seq_mean_token_mean`: mean per sequence, then mean over sequences.
    `denominator` replaces the count (of tokens, or of sequences) with the count
    over the *whole* batch, so that micro-batches and ranks each divide by the
    global count and their gradients add up to exactly the full-batch gradient.
    """
    return AGGREGATIONS[mode](loss_tokens, mask.to(loss_tokens.dtype), denominator)


def normaliser(mask: torch.Tensor, mode: str) -> float:
    """What `aggregate(mode)` divides by for this batch (summed across shards by the caller)."""
    return float(mask.sum()) if mode == "token_mean" else float(mask.shape[0])


def _token_mean(loss_tokens, mask, denominator):
    denom = mask.sum() if denominator is None else denominator
    return (loss_tokens * mask).sum() / max(float(denom), 1.0)


def _seq_mean_token_mean(loss_tokens, mask, denominator):
    per_seq = (loss_tokens * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    denom = per_seq.numel() if denominator is None else denominator
    return per_seq.sum() / max(float(denom), 1.0)


AGGREGATIONS = {
    "token_mean": _token_mean,
    "seq_mean_token_mean": _seq_mean_token_mean,
}


# --------------------------------------------------------------------------- log-probs


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[target] for each position; [B, T, V] x [B, T] -> [B, T].

    Computed as logit - logsumexp, which avoids materialising a second [B, T, V]
    tensor of log-probs.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)
