"""Rollout corrections: weights for the gap between the engine that sampled the tokens
(`rollout_logp`) and the trainer's log-probs of the same behaviour policy (`old_logp`).

Every entry of `CORRECTIONS` takes (old_logp, rollout_logp, mask, *, low, high, ...) and
returns detached [B, T] `weights` (the per-token loss is multiplied by them) and a bool
`keep` ([B, T]: valid and not masked). `correction_sums` turns them into the statistics the
trainer reports. With k = exp(old_logp - rollout_logp) = pi_train / pi_infer per token:

- `tis`: w = min(k, high) (truncated IS; Yao et al. 2025, "Your efficient RL framework
  secretly brings you off-policy RL training"); nothing is masked. `high` defaults to 2.
- `mis_token`: w = k if low <= k <= high else 0 (token-level masked IS, Liu, Li et al. 2025,
  "When speed kills stability"). Default band [0.5, 2]: verl's token rejection threshold 2 and
  its default lower bound 1/2.
- `icepop`: the same per-token rule with the Ring-1T band: M(k) = k if alpha <= k <= beta
  else 0, alpha = 0.5, beta = 5 (Ling team 2025, arXiv 2510.18855, the IcePop objective).
  Kept tokens are weighted by k, as in the paper's M(k), not by 1.
- `mis_seq`: one ratio per sequence, s = prod_t k_t (`seq_ratio: product`) or
  s = exp(mean_t log k_t) (`geo_mean`); a sequence with s outside [low, high] is masked
  entirely. Kept sequences are weighted by s when s is the product (sequence-level MIS, the
  sequence's true IS weight) and by 1 for `geo_mean`, which is not an IS weight, only a
  per-token-normalised test (verl's "geometric" rejection sampling). Defaults: [0.5, 2] for
  `product`, [1/1.001, 1.001] for `geo_mean` (verl's geometric threshold 1.001, lower 1/upper).

Departure from the papers: a masked token keeps its place in the loss normaliser (its loss is
multiplied by 0), because the trainer fixes the global normaliser before the forward pass that
computes k; verl's rejection sampling drops it from the denominator instead.
"""

from __future__ import annotations

import math

import torch


def tis_weights(old_logp: torch.Tensor, rollout_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance sampling: min(exp(old_logp - rollout_logp), cap), detached; [B, T].

    Reweights tokens for the gap between the engine that sampled them and the trainer's
    behaviour-policy log-probs. Padding positions carry whatever the inputs hold: the
    caller multiplies by its mask.
    """
    with torch.no_grad():
        return torch.exp(old_logp - rollout_logp).clamp(max=cap)


def tis_weights_reference(old_logp, rollout_logp, cap: float) -> torch.Tensor:
    flat = [min(math.exp(o - r), cap) for o, r in zip(old_logp.flatten().tolist(), rollout_logp.flatten().tolist())]
    return torch.tensor(flat, dtype=torch.float64).reshape(old_logp.shape)


def tis_correction(old_logp, rollout_logp, mask, *, high: float | None = None, **_):
    """`tis_weights` in the `CORRECTIONS` signature: cap `high` (default 2), nothing masked."""
    weights = tis_weights(old_logp, rollout_logp, 2.0 if high is None else high)
    return weights, mask.detach() > 0


def mis_token_correction(old_logp, rollout_logp, mask, *, low: float | None = None, high: float | None = None, **_):
    """Token-level masked IS: w = k inside [low, high] (default [0.5, 2]), 0 outside."""
    low, high = (0.5 if low is None else low), (2.0 if high is None else high)
    with torch.no_grad():
        k = torch.exp(old_logp - rollout_logp)
        keep = (mask > 0) & (k >= low) & (k <= high)
        return torch.where(keep, k, torch.zeros_like(k)), keep


def icepop_correction(old_logp, rollout_logp, mask, *, low: float | None = None, high: float | None = None, **_):
    """IcePop: M(k) = k for alpha <= k <= beta, else 0; alpha = `low` (0.5), beta = `high` (5)."""
    return mis_token_correction(old_logp, rollout_logp, mask, low=0.5 if low is None else low,
                                high=5.0 if high is None else high)


SEQ_BANDS = {"product": (0.5, 2.0), "geo_mean": (1 / 1.001, 1.001)}


def mis_seq_correction(old_logp, rollout_logp, mask, *, low: float | None = None, high: float | None = None,
                       seq_ratio: str = "geo_mean", **_):
    """Sequence-level masked IS: mask a whole sequence whose ratio s is outside [low, high]; a kept
    sequence's tokens get s (`product`) or 1 (`geo_mean`)."""
    default_low, default_high = SEQ_BANDS[seq_ratio]
    low, high = (default_low if low is None else low), (default_high if high is None else high)
    with torch.no_grad():
        valid = (mask > 0).to(old_logp.dtype)
        log_k = (old_logp - rollout_logp) * valid
        total = log_k.sum(-1, keepdim=True)
        log_s = total if seq_ratio == "product" else total / valid.sum(-1, keepdim=True).clamp(min=1)
        s = torch.exp(log_s)
        keep = (mask > 0) & (s >= low) & (s <= high)
        per_seq = s if seq_ratio == "product" else torch.ones_like(s)
        return torch.where(keep, per_seq.expand_as(keep).to(old_logp.dtype), torch.zeros_like(old_logp)), keep


def correction_reference(old_logp, rollout_logp, mask, mode: str, *, low=None, high=None, seq_ratio="geo_mean"):
    """Token-by-token (and row-by-row for `mis_seq`) loop version of `CORRECTIONS[mode]`'s weights (float64)."""
    out = torch.zeros(old_logp.shape, dtype=torch.float64)
    for b in range(old_logp.shape[0]):
        ks = [math.exp(o - r) for o, r in zip(old_logp[b].tolist(), rollout_logp[b].tolist())]
        valid = [t for t in range(len(ks)) if mask[b, t] > 0]
        if mode == "mis_seq":
            lo, hi = SEQ_BANDS[seq_ratio]
            lo, hi = (lo if low is None else low), (hi if high is None else high)
            logs = sum(math.log(ks[t]) for t in valid)
            s = math.exp(logs if seq_ratio == "product" else logs / max(len(valid), 1))
            for t in valid:
                out[b, t] = (s if seq_ratio == "product" else 1.0) if lo <= s <= hi else 0.0
            continue
        for t in valid:
            if mode == "tis":
                out[b, t] = min(ks[t], 2.0 if high is None else high)
            else:
                lo, hi = {"mis_token": (0.5, 2.0), "icepop": (0.5, 5.0)}[mode]
                lo, hi = (lo if low is None else low), (hi if high is None else high)
                out[b, t] = ks[t] if lo <= ks[t] <= hi else 0.0
    return out


CORRECTIONS = {
    "tis": tis_correction,
    "mis_token": mis_token_correction,
    "mis_seq": mis_seq_correction,
    "icepop": icepop_correction,
}


def correction_sums(weights: torch.Tensor, keep: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Sums a caller adds up over micro-batches and ranks: masked valid tokens, sequences with any
    masked token, valid sequences, the weights' sum over valid tokens, and their max (a max, not a sum).

    >>> w = torch.tensor([[1.5, 0.0, 9.0], [1.0, 1.0, 0.0]]); m = torch.tensor([[1., 1., 0.], [1., 1., 0.]])
    >>> correction_sums(w, w > 0, m)
    {'correction_masked_tokens': 1.0, 'correction_masked_seqs': 1.0, 'correction_seqs': 2.0, 'correction_weight_sum': 3.5, 'correction_weight_max': 1.5}
    """
    with torch.no_grad():
        valid = mask > 0
        masked = valid & ~keep
        w = torch.where(valid, weights, torch.zeros_like(weights))
        return {
            "correction_masked_tokens": float(masked.sum()),
            "correction_masked_seqs": float(masked.any(-1).sum()),
            "correction_seqs": float(valid.any(-1).sum()),
            "correction_weight_sum": float(w.sum()),
            "correction_weight_max": float(w.max()) if w.numel() and valid.any() else 0.0,
        }
