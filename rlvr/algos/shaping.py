"""Reward shaping: DAPO's soft overlong punishment."""

from __future__ import annotations

import torch


def overlong_penalty(lengths: torch.Tensor, max_tokens: int, cache_len: int) -> torch.Tensor:
    """DAPO soft overlong punishment per completion length; [B] -> [B] float.

    0 if L <= max - cache; ((max - cache) - L) / cache if max - cache < L <= max; -1 if L > max.
    That is ((max - cache) - L) / cache clamped to [-1, 0].
    """
    if not 0 < cache_len <= max_tokens:
        raise ValueError(f"need 0 < cache_len <= max_tokens, got cache_len={cache_len}, max_tokens={max_tokens}")
    free = max_tokens - cache_len
    return ((free - lengths.to(torch.float32)) / cache_len).clamp(min=-1.0, max=0.0)


def overlong_penalty_reference(lengths, max_tokens: int, cache_len: int) -> torch.Tensor:
    out = []
    for n in lengths.tolist():
        if n <= max_tokens - cache_len:
            out.append(0.0)
        elif n <= max_tokens:
            out.append(((max_tokens - cache_len) - n) / cache_len)
        else:
            out.append(-1.0)
    return torch.tensor(out)
