"""KL estimators (`KL`): k1, k2, k3 per token."""

from __future__ import annotations

import math

import torch


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = logp - ref_logp (unbiased for KL(pi || ref), can be negative)."""
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * (logp - ref_logp)^2 (biased, low variance, >= 0)."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = exp(ref - logp) - (ref - logp) - 1 (unbiased for KL(pi || ref), >= 0; Schulman 2020)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


KL = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_reference(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Element-by-element loop version of `KL[kind]` (float64)."""
    formulas = {
        "k1": lambda x, r: x - r,
        "k2": lambda x, r: 0.5 * (x - r) ** 2,
        "k3": lambda x, r: math.exp(r - x) - (r - x) - 1,
    }
    f = formulas[kind]
    flat = [f(x, r) for x, r in zip(logp.flatten().tolist(), ref_logp.flatten().tolist())]
    return torch.tensor(flat, dtype=torch.float64).reshape(logp.shape)
