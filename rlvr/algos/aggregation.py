"""Loss aggregation (`AGGREGATIONS`): a [B, T] per-token loss to a scalar, and the normaliser
that lets shards add up to the whole batch."""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch


def aggregate(
    loss_tokens: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    *,
    max_tokens: int | None = None,
    denominator: float | None = None,
) -> torch.Tensor:
    """Reduce a [B, T] per-token loss to a scalar.

    `token_mean`: sum over valid tokens / their count.
    `seq_mean_token_mean`: mean per sequence, then mean over sequences.
    `seq_mean_token_sum_norm`: sum per sequence / `max_tokens` (required), then mean
    over sequences (Dr. GRPO).
    `denominator` replaces the count (of tokens, or of sequences) with the count
    over the *whole* batch (`normaliser`, summed over shards), so that micro-batches
    and ranks each divide by the global count and their losses and gradients add up
    to exactly the full-batch ones.
    """
    return AGGREGATIONS[mode].reduce(loss_tokens, mask.to(loss_tokens.dtype), max_tokens=max_tokens,
                                     denominator=denominator)


def normaliser(lengths, mode: str) -> float:
    """What `aggregate(mode)` divides by for a batch (summed across shards by the caller), from
    its valid-token counts per sequence (`lengths`, or a [B, T] mask): each entry of
    `AGGREGATIONS` carries its own (tokens for `token_mean`, sequences for the seq_* modes).

    >>> normaliser([3, 1], "token_mean"), normaliser(torch.tensor([[1., 1, 1], [1, 0, 0]]), "seq_mean_token_mean")
    (4.0, 2.0)
    """
    if isinstance(lengths, torch.Tensor) and lengths.dim() == 2:
        lengths = lengths.sum(-1)
    return AGGREGATIONS[mode].normaliser([float(n) for n in lengths])


def _divide(total: torch.Tensor, denom) -> torch.Tensor:
    if isinstance(denom, torch.Tensor):
        return total / denom.clamp(min=1)
    return total / max(float(denom), 1.0)


def _token_mean(loss_tokens, mask, *, max_tokens=None, denominator=None):
    return _divide((loss_tokens * mask).sum(), mask.sum() if denominator is None else denominator)


def _seq_mean_token_mean(loss_tokens, mask, *, max_tokens=None, denominator=None):
    per_seq = (loss_tokens * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return _divide(per_seq.sum(), per_seq.numel() if denominator is None else denominator)


def _seq_mean_token_sum_norm(loss_tokens, mask, *, max_tokens=None, denominator=None):
    if max_tokens is None:
        raise ValueError("loss aggregation 'seq_mean_token_sum_norm' needs max_tokens")
    per_seq = (loss_tokens * mask).sum(-1) / max_tokens
    return _divide(per_seq.sum(), per_seq.numel() if denominator is None else denominator)


class Aggregation(NamedTuple):
    """A loss aggregation: how it reduces a [B, T] per-token loss, and the count it divides by
    (from the valid-token count of each sequence), the batch's normaliser."""

    reduce: Callable
    normaliser: Callable[[list[float]], float]


def _tokens(lengths: list[float]) -> float:
    return float(sum(lengths))


def _sequences(lengths: list[float]) -> float:
    return float(len(lengths))


AGGREGATIONS = {
    "token_mean": Aggregation(_token_mean, _tokens),
    "seq_mean_token_mean": Aggregation(_seq_mean_token_mean, _sequences),
    "seq_mean_token_sum_norm": Aggregation(_seq_mean_token_sum_norm, _sequences),
}


def aggregate_reference(loss_tokens, mask, mode: str, *, max_tokens: int | None = None) -> float:
    """Loop version of `aggregate` without `denominator` (float64 Python floats)."""
    rows = [[(x, m) for x, m in zip(lr.tolist(), mr.tolist()) if m] for lr, mr in zip(loss_tokens, mask)]
    if mode == "token_mean":
        valid = [x for row in rows for x, _ in row]
        return sum(valid) / max(len(valid), 1)
    if mode == "seq_mean_token_mean":
        per_seq = [sum(x for x, _ in row) / max(len(row), 1) for row in rows]
    elif mode == "seq_mean_token_sum_norm":
        if max_tokens is None:
            raise ValueError("loss aggregation 'seq_mean_token_sum_norm' needs max_tokens")
        per_seq = [sum(x for x, _ in row) / max_tokens for row in rows]
    else:
        raise KeyError(mode)
    return sum(per_seq) / max(len(per_seq), 1)
