"""Weights under the names and layout a checkpoint (and vLLM's loader) uses.

transformers 5 keeps some weights in a fused in-memory layout: a Qwen3-MoE layer's experts
are one `mlp.experts.gate_up_proj` [experts, 2 x ffn, hidden] and one `down_proj` tensor,
while the saved checkpoint (and what vLLM's `load_weights` expects) has
`mlp.experts.<e>.gate_proj.weight` etc. per expert. Sending the in-memory layout to a vLLM
engine does not fail: it silently loads wrong weights (measured on the tiny qwen3_moe:
log-probs moved by ~0.05 after pushing unchanged weights). `saved_format` reverts the
layout the way `save_pretrained` does; models loaded without conversions pass through.
"""

from __future__ import annotations


def saved_format(model, state: dict | None) -> dict | None:
    """`state` (in-memory HF names of `model`, the unwrapped transformers model) in the
    checkpoint layout; None (a rank that holds no gathered state) stays None."""
    if state is None or not getattr(model, "_weight_conversions", None):
        return state
    from transformers.core_model_loading import revert_weight_conversion

    return revert_weight_conversion(model, state)
