"""PPO with a critic: per-token rewards, GAE (`TOKEN_ADVANTAGES`), advantage whitening
(`WHITENING`), the clipped value loss and explained variance; each with a slow loop `*_reference`.

Every tensor is [B, T] over the completion tokens, `mask` 1 where a token was sampled (carries
loss) and 0 for padding and a multi-turn episode's observation tokens. `values[b, t]` is the
critic's V(s_t): the value of the state *before* token t is sampled (prompt + tokens < t).

Where we depart from the papers (PPO, Schulman et al. 2017; GAE, Schulman et al. 2016; the
RLHF form of Ouyang et al. 2022):
- Masked tokens are *skipped*, not terminal: GAE runs over the sampled tokens alone, so the
  last token of a turn bootstraps from the value of the first token of the next turn, and an
  observation token gets no advantage, no return and no value loss (mask 0).
- The episode ends after its last sampled token: V after it is 0 (no truncation bootstrap,
  also for completions cut at `rollout.max_tokens`).
- The value loss is PPO2's (OpenAI baselines): 0.5 * max((V - R)^2, (V_clip - R)^2) with
  V_clip = V_old + clip(V - V_old, -c, c); `clip=None` is the plain squared error.
"""

from __future__ import annotations

import math

import torch


def terminal_rewards(scores: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None = None,
                     kl_coef: float = 0.0) -> torch.Tensor:
    """[B, T] per-token rewards: each row's score on its last sampled token, minus `kl_coef * kl`
    on every sampled token (the per-token KL penalty of RLHF PPO).

    >>> terminal_rewards(torch.tensor([1., 2.]), torch.tensor([[1., 1, 0], [1, 0, 1]])).tolist()
    [[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]
    """
    mask = mask.to(scores.dtype)
    T = mask.shape[1]
    # index of the last 1 per row: the largest t * m (0 for an all-zero row, whose reward is masked off)
    last = (torch.arange(T, device=mask.device) * mask).argmax(-1)
    rewards = torch.zeros_like(mask)
    rewards[torch.arange(mask.shape[0]), last] = scores
    rewards = rewards * mask
    if kl is not None and kl_coef:
        rewards = rewards - kl_coef * kl.to(rewards.dtype) * mask
    return rewards


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0,
                   lam: float = 1.0, **_) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both [B, T], zero where mask is 0.

    delta_t = r_t + gamma * V(next sampled token) - V_t, A_t = delta_t + gamma * lam * A_next,
    R_t = A_t + V_t; "next" skips masked tokens (see the module docstring). One pass over T,
    vectorised over the batch.
    """
    mask = mask.to(values.dtype)
    B, T = values.shape
    adv = torch.zeros_like(values)
    next_value = torch.zeros(B, dtype=values.dtype, device=values.device)
    next_adv = torch.zeros_like(next_value)
    for t in reversed(range(T)):
        m = mask[:, t] > 0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        adv[:, t] = torch.where(m, a, torch.zeros_like(a))
        next_adv = torch.where(m, a, next_adv)
        next_value = torch.where(m, values[:, t], next_value)
    return adv, (adv + values) * mask


def gae_advantages_reference(rewards, values, mask, *, gamma: float = 1.0, lam: float = 1.0):
    """Per row: the sampled tokens alone, textbook GAE over them (float64 loops)."""
    adv = torch.zeros(values.shape, dtype=torch.float64)
    for b in range(values.shape[0]):
        idx = [t for t in range(values.shape[1]) if mask[b, t] > 0]
        r = [rewards[b, t].item() for t in idx]
        v = [values[b, t].item() for t in idx] + [0.0]  # V after the last sampled token: 0
        running = 0.0
        for k in reversed(range(len(idx))):
            running = r[k] + gamma * v[k + 1] - v[k] + gamma * lam * running
            adv[b, idx[k]] = running
    returns = (adv + values.double()) * (mask > 0)
    return adv, returns


TOKEN_ADVANTAGES = {"gae": gae_advantages}  # per-token estimators from a critic's values (algorithm.advantage)


# --------------------------------------------------------------------------- whitening


def _whiten(adv: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """(A - masked mean) / (masked population std + eps) on the masked tokens, 0 elsewhere."""
    m = mask.to(adv.dtype)
    n = m.sum().clamp(min=1)
    mean = (adv * m).sum() / n
    std = ((((adv - mean) * m) ** 2).sum() / n).sqrt()
    return (adv - mean) / (std + eps) * m


def whiten_none(adv, mask, group_ids=None, *, eps: float = 1e-6):
    return adv * mask.to(adv.dtype)


def whiten_batch(adv, mask, group_ids=None, *, eps: float = 1e-6):
    """Over every sampled token of the batch (what verl and OpenRLHF do for PPO)."""
    return _whiten(adv, mask, eps)


def whiten_group(adv, mask, group_ids, *, eps: float = 1e-6):
    """Over the sampled tokens of each group (the completions of one prompt)."""
    out = torch.zeros_like(adv)
    for g in group_ids.unique():
        rows = group_ids == g
        out[rows] = _whiten(adv[rows], mask[rows], eps)
    return out


WHITENING = {"none": whiten_none, "batch": whiten_batch, "group": whiten_group}  # algorithm.gae.whiten


def whiten_reference(adv, mask, group_ids, mode: str, *, eps: float = 1e-6):
    """Loop version of `WHITENING[mode]` (float64)."""
    out = torch.zeros(adv.shape, dtype=torch.float64)
    B, T = adv.shape
    if mode == "none":
        return adv.double() * (mask > 0)
    sets = [list(range(B))] if mode == "batch" else [
        [b for b in range(B) if group_ids[b] == g] for g in sorted(set(group_ids.tolist()))]
    for rows in sets:
        cells = [(b, t) for b in rows for t in range(T) if mask[b, t] > 0]
        xs = [adv[b, t].item() for b, t in cells]
        mean = sum(xs) / max(len(xs), 1)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / max(len(xs), 1))
        for (b, t), x in zip(cells, xs):
            out[b, t] = (x - mean) / (std + eps)
    return out


# --------------------------------------------------------------------------- the critic's loss


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *,
               clip: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token clipped value loss [B, T] (0 where mask is 0) and its metrics: clip_frac (the
    fraction of sampled tokens where the clipped term is the larger one, i.e. the gradient is cut)."""
    mask = mask.to(values.dtype)
    unclipped = (values - returns) ** 2
    if clip is None:
        loss, clipped_more = unclipped, torch.zeros_like(unclipped, dtype=torch.bool)
    else:
        v_clip = old_values + (values - old_values).clamp(-clip, clip)
        clipped = (v_clip - returns) ** 2
        loss, clipped_more = torch.maximum(unclipped, clipped), clipped > unclipped
    with torch.no_grad():
        clip_frac = (clipped_more * mask).sum().item() / max(mask.sum().item(), 1.0)
    return 0.5 * loss * mask, {"clip_frac": clip_frac}


def value_loss_reference(values, old_values, returns, mask, *, clip=None):
    out = torch.zeros(values.shape, dtype=torch.float64)
    for b in range(values.shape[0]):
        for t in range(values.shape[1]):
            if mask[b, t] == 0:
                continue
            v, vo, r = values[b, t].item(), old_values[b, t].item(), returns[b, t].item()
            loss = (v - r) ** 2
            if clip is not None:
                loss = max(loss, (vo + min(max(v - vo, -clip), clip) - r) ** 2)
            out[b, t] = 0.5 * loss
    return out


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over the sampled tokens (1: perfect, 0: no better than the mean,
    < 0: worse); nan when the returns do not vary."""
    m = mask.to(torch.float64)
    n = m.sum().clamp(min=1)
    v, r = values.double(), returns.double()

    def var(x):
        mean = (x * m).sum() / n
        return (((x - mean) * m) ** 2).sum() / n

    var_r = var(r)
    return float("nan") if var_r == 0 else float(1 - var(r - v) / var_r)


def explained_variance_reference(values, returns, mask) -> float:
    cells = [(v, r) for vr, rr, mr in zip(values.tolist(), returns.tolist(), mask.tolist())
             for v, r, m in zip(vr, rr, mr) if m]
    rs = [r for _, r in cells]
    diffs = [r - v for v, r in cells]

    def var(xs):
        mu = sum(xs) / len(xs)
        return sum((x - mu) ** 2 for x in xs) / len(xs)

    return float("nan") if var(rs) == 0 else 1 - var(diffs) / var(rs)
