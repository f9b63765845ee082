"""Policy losses (`POLICY_LOSSES`): [B, T] per-token losses plus float metrics, one signature.

`advantages` is [B] (one per sequence) or [B, T] (one per token, from a critic: `rlvr.algos.values`).
The sequence-ratio losses (GSPO, GMPO) then keep their token form: each token's loss is its own
advantage times the sequence's ratio; their sequence-form references take [B] only."""

from __future__ import annotations

import math

import torch


TOKEN_ADVANTAGE_LOSSES = ("ppo_clip", "cispo", "sapo", "nll")  # per-token advantage semantics (distillation)


def per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Advantages as [B, T] (a [B, T] tensor: per token, PPO's GAE) or [B, 1] (a [B] tensor: one
    per sequence, broadcast over its tokens), in `like`'s dtype. Every loss takes either."""
    adv = advantages.to(like.dtype)
    return adv if adv.dim() == 2 else adv.unsqueeze(-1)


def _adv_at(advantages, b: int, t: int) -> float:
    """A sample's (or, [B, T], a token's) advantage in the loop references."""
    return (advantages[b, t] if advantages.dim() == 2 else advantages[b]).item()


def _k3_mean(log_ratio: torch.Tensor, mask: torch.Tensor) -> float:
    """Token mean of k3 = (r - 1) - log r, r = pi/pi_old: an estimate of KL(old || new)."""
    return (((log_ratio.exp() - 1) - log_ratio) * mask).sum().item() / max(mask.sum().item(), 1.0)


def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    **_,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token clipped surrogate: -min(ratio*A, clip(ratio, 1-clip_low, 1+clip_high)*A).

    `clip_high > clip_low` is DAPO's clip-higher. `dual_clip = c > 1` (Ye et al. 2020)
    caps the loss of tokens with A < 0 at -c*A. `logp`, `old_logp`, `mask` are
    [B, T]; `advantages` is [B] or [B, T]. Returns the [B, T] per-token loss (zero where mask
    is 0) and float metrics: clip_fraction, approx_kl, and dual_clip_fraction if used.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    mask = mask.to(logp.dtype)
    adv = per_token(advantages, logp)
    log_ratio = (logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    loss = -torch.minimum(unclipped, clipped)
    if dual_clip is not None:
        cap = -dual_clip * adv
        capped = (adv < 0) & (cap < loss)
        loss = torch.where(adv < 0, torch.minimum(loss, cap), loss)
    with torch.no_grad():
        n = max(mask.sum().item(), 1.0)
        metrics = {
            "clip_fraction": ((clipped < unclipped) * mask).sum().item() / n,
            "approx_kl": _k3_mean(log_ratio, mask),
        }
        if dual_clip is not None:
            metrics["dual_clip_fraction"] = (capped * mask).sum().item() / n
    return loss * mask, metrics


def ppo_clip_loss_reference(logp, old_logp, advantages, mask, *, clip_low=0.2, clip_high=0.2, dual_clip=None):
    """Token-by-token loop version of `ppo_clip_loss` (value only, float64)."""
    out = torch.zeros(logp.shape, dtype=torch.float64)
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            if mask[b, t] == 0:
                continue
            a = _adv_at(advantages, b, t)
            r = math.exp(logp[b, t].item() - old_logp[b, t].item())
            loss = -min(r * a, min(max(r, 1 - clip_low), 1 + clip_high) * a)
            if dual_clip is not None and a < 0:
                loss = min(loss, -dual_clip * a)
            out[b, t] = loss
    return out


def gspo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    **_,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO (Zheng et al. 2025): a sequence-level ratio, clipped per sequence.

    s_i = exp(mean over valid tokens of (logp - old_logp)) and every valid token of
    sequence i gets the loss -min(s*A, clip(s, 1-clip_low, 1+clip_high)*A).

    Gradient: the paper's GSPO-token form, s_i,t = sg[s_i] * exp(logp_t - sg[logp_t]).
    Its value is exactly s_i, and d loss_tokens[i, t] / d logp[i, t'] is -s_i*A_i when
    t' == t (and the sequence is not clipped), 0 otherwise. Summed over a sequence's
    tokens this equals the gradient of |y_i| * (-s_i*A_i) in the sequence form
    (d s_i / d logp_t = s_i/|y_i|), so under any aggregation that weighs a row's
    tokens equally (all of `AGGREGATIONS`) it is the paper's GSPO gradient, and it
    also stays right if a caller gives tokens their own advantages.
    The clip range defaults to the paper's 3e-4 / 4e-4; config usually passes its own.
    """
    mask = mask.to(logp.dtype)
    adv = per_token(advantages, logp)
    log_ratio = (logp - old_logp) * mask
    seq_log_ratio = log_ratio.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
    s = torch.exp(seq_log_ratio.detach() + logp - logp.detach())  # value s_i, gradient s_i per own token
    unclipped = s * adv
    clipped = torch.clamp(s, 1.0 - clip_low, 1.0 + clip_high) * adv
    loss = -torch.minimum(unclipped, clipped) * mask
    with torch.no_grad():
        n = max(mask.sum().item(), 1.0)
        metrics = {
            "clip_fraction": ((clipped < unclipped) * mask).sum().item() / n,
            "approx_kl": _k3_mean(log_ratio, mask),
        }
    return loss, metrics


def gspo_loss_reference(logp, old_logp, advantages, mask, *, clip_low=3e-4, clip_high=4e-4):
    """Row-by-row GSPO in the paper's *sequence* form (s_i differentiable as a whole).

    Differs from `gspo_loss` per token in its gradient, not in value; aggregated over
    a row the gradients agree (the tests check both).
    """
    rows = []
    for b in range(logp.shape[0]):
        valid = mask[b].bool()
        n = int(valid.sum())
        s = torch.exp((logp[b][valid] - old_logp[b][valid]).sum() / max(n, 1))
        a = advantages[b]
        seq_loss = -torch.minimum(s * a, torch.clamp(s, 1 - clip_low, 1 + clip_high) * a)
        rows.append(torch.where(valid, seq_loss, torch.zeros_like(logp[b])))
    return torch.stack(rows)


def cispo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 1.0,
    clip_high: float = 0.28,
    **_,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CISPO (MiniMax-M1, arXiv 2506.13585, eq. 4-5): -sg(r_hat) * A * logp per token,
    r_hat = clip(r, 1 - clip_low, 1 + clip_high), r = exp(logp - old_logp).

    The importance weight is clipped and detached, never the token: every token keeps a
    gradient, -sg(r_hat)*A * d logp. The paper sets no lower bound in practice ("eps_low^IS
    large"): the default clip_low = 1 makes the lower bound 0; clip_high = 0.28 is our choice
    (the paper tunes it without giving the value; Trinity-RFT's CISPO default). The value is
    the paper's surrogate -r_hat*A*logp, so the logged loss is on another scale than PPO's.
    Metrics: clip_fraction (tokens whose weight was clipped), approx_kl.
    """
    mask = mask.to(logp.dtype)
    adv = per_token(advantages, logp)
    log_ratio = (logp - old_logp) * mask
    with torch.no_grad():
        ratio = torch.exp(log_ratio)
        weight = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = -(weight * adv * logp) * mask
    with torch.no_grad():
        n = max(mask.sum().item(), 1.0)
        metrics = {"clip_fraction": ((weight != ratio) * mask).sum().item() / n, "approx_kl": _k3_mean(log_ratio, mask)}
    return loss, metrics


def cispo_loss_reference(logp, old_logp, advantages, mask, *, clip_low=1.0, clip_high=0.28):
    """Token-by-token CISPO, differentiable in `logp` (the weight is a Python float: detached)."""
    rows = []
    for b in range(logp.shape[0]):
        row = []
        for t in range(logp.shape[1]):
            if mask[b, t] == 0:
                row.append(logp[b, t] * 0.0)
                continue
            r = math.exp(logp[b, t].item() - old_logp[b, t].item())
            w = min(max(r, 1 - clip_low), 1 + clip_high)
            row.append(-w * _adv_at(advantages, b, t) * logp[b, t])
        rows.append(torch.stack(row))
    return torch.stack(rows)


def gmpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.4,
    clip_high: float = 0.4,
    **_,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GMPO (Zhao et al. 2025, arXiv 2507.20673, eq. 4): the geometric mean of the token ratios,
    clipped token-wise in log space, times the sequence advantage:

        c_t = sgn(A) * min(sgn(A) * l_t, sgn(A) * clip(l_t, -clip_low, clip_high)),  l_t = logp_t - old_logp_t
        s_i = exp(mean over valid tokens of c_t);  sequence loss -A_i * s_i

    (the pessimistic side in log space, PPO's min carried over; the paper's range is
    (-0.4, 0.4), i.e. ratios in [e^-0.4, e^0.4]). Like `gspo_loss`, every valid token carries
    the sequence value, with the gradient -A_i * s_i * d c_t (s_i,t = sg[s_i] * exp(c_t - sg[c_t])),
    which is |y_i| times the sequence form's gradient per row: under `seq_mean_token_mean`
    (the `gmpo` preset) this is exactly the paper's 1/G sum over sequences.
    Metrics: clip_fraction (tokens on the clipped side), approx_kl.
    """
    mask = mask.to(logp.dtype)
    adv = per_token(advantages, logp)
    sign = torch.sign(adv)
    log_ratio = (logp - old_logp) * mask
    clipped = torch.clamp(log_ratio, -clip_low, clip_high)
    c = sign * torch.minimum(sign * log_ratio, sign * clipped)
    seq = (c * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
    s = torch.exp(seq.detach() + c - c.detach())
    loss = -adv * s * mask
    with torch.no_grad():
        n = max(mask.sum().item(), 1.0)
        metrics = {"clip_fraction": ((c != log_ratio) * mask).sum().item() / n, "approx_kl": _k3_mean(log_ratio, mask)}
    return loss, metrics


def gmpo_loss_reference(logp, old_logp, advantages, mask, *, clip_low=0.4, clip_high=0.4):
    """Row-by-row GMPO in the paper's sequence form: the product of the clipped token ratios
    to the power 1/|y_i|, differentiable as a whole (gradients agree with `gmpo_loss` summed per row)."""
    rows = []
    for b in range(logp.shape[0]):
        valid = mask[b].bool()
        a = advantages[b]
        prod = torch.ones((), dtype=logp.dtype)
        for t in valid.nonzero().flatten().tolist():
            r = torch.exp(logp[b, t] - old_logp[b, t])
            r_clip = torch.clamp(r, math.exp(-clip_low), math.exp(clip_high))
            prod = prod * (torch.minimum(r, r_clip) if a > 0 else torch.maximum(r, r_clip) if a < 0 else r ** 0)
        s = prod ** (1.0 / max(int(valid.sum()), 1))
        rows.append(torch.where(valid, -a * s, torch.zeros_like(logp[b])))
    return torch.stack(rows)


def sapo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    tau_pos: float = 1.0,
    tau_neg: float = 1.05,
    **_,
) -> tuple[torch.Tensor, dict[str, float]]:
    """SAPO (Gao et al. 2025, arXiv 2511.20347): a soft gate on the token ratio instead of a clip:

        loss_t = -f(r_t) * A,  f(r) = (4 / tau) * sigmoid(tau * (r - 1)),  tau = tau_pos if A > 0 else tau_neg

    so d loss_t = -A * w_t * r_t * d logp_t with w_t = 4 * sigmoid(x)(1 - sigmoid(x)), x = tau*(r_t - 1):
    w = 1 on-policy (r = 1, the plain policy gradient) and decays smoothly as r leaves 1, faster
    for the larger tau. Paper defaults tau_pos = 1.0, tau_neg = 1.05. Metrics: gate_weight (mean w),
    approx_kl.
    """
    mask = mask.to(logp.dtype)
    adv = per_token(advantages, logp)
    tau = torch.where(adv > 0, torch.full_like(adv, tau_pos), torch.full_like(adv, tau_neg))
    log_ratio = (logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    gate = torch.sigmoid(tau * (ratio - 1.0))
    loss = -(4.0 / tau) * gate * adv * mask
    with torch.no_grad():
        n = max(mask.sum().item(), 1.0)
        metrics = {"gate_weight": (4 * gate * (1 - gate) * mask).sum().item() / n, "approx_kl": _k3_mean(log_ratio, mask)}
    return loss, metrics


def sapo_loss_reference(logp, old_logp, advantages, mask, *, tau_pos=1.0, tau_neg=1.05):
    """Token-by-token SAPO value (float64)."""
    out = torch.zeros(logp.shape, dtype=torch.float64)
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            if mask[b, t]:
                a = _adv_at(advantages, b, t)
                tau = tau_pos if a > 0 else tau_neg
                r = math.exp(logp[b, t].item() - old_logp[b, t].item())
                out[b, t] = -(4 / tau) / (1 + math.exp(-tau * (r - 1))) * a
    return out


def nll_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    **_,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Negative log-likelihood weighted by the sample's advantage: -A * logp per token.

    With A = 1 on every row this is supervised fine-tuning's cross-entropy (`rlvr sft`
    builds its rows so; with `token_mean` aggregation and the global normaliser it is
    the exact token-mean NLL over every rank and micro-batch). With RL advantages it is
    the plain policy gradient (REINFORCE with the advantage as baseline-corrected
    return): no ratio and no clip, so at ratio 1 its gradient equals `ppo_clip_loss`'s.
    `old_logp` only feeds `approx_kl`; `clip_fraction` is 0 (nothing is clipped).
    """
    mask = mask.to(logp.dtype)
    adv = per_token(advantages, logp)
    loss = -adv * logp * mask
    with torch.no_grad():
        metrics = {"clip_fraction": 0.0, "approx_kl": _k3_mean((logp - old_logp) * mask, mask)}
    return loss, metrics


def nll_loss_reference(logp, advantages, mask):
    """Token-by-token `nll_loss`, differentiable in `logp`."""
    rows = []
    for b in range(logp.shape[0]):
        rows.append(torch.stack([-_adv_at(advantages, b, t) * logp[b, t] if mask[b, t] else logp[b, t] * 0.0
                                 for t in range(logp.shape[1])]))
    return torch.stack(rows)


POLICY_LOSSES = {
    "ppo_clip": ppo_clip_loss,
    "gspo": gspo_loss,
    "cispo": cispo_loss,
    "gmpo": gmpo_loss,
    "sapo": sapo_loss,
    "nll": nll_loss,
}
