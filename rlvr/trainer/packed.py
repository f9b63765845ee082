"""The packed layout's forward (`trainer.pack_sequences`; the layout is `rlvr.trainer.batch.collate_packed`).

One row holds every sample of the micro-batch back to back, no padding; position ids restart
at 0 at each sample. The model is called with `attention_mask=None`, those position ids and
no cache: transformers 5 then finds the sample boundaries in the position ids
(`masking_utils.find_packed_sequence_indices`: a step other than +1 starts a new sequence) and
builds a block-diagonal causal mask for sdpa, eager and flex attention; its flash-attention
path turns the same position ids into varlen `cu_seqlens`. Two conditions, both enforced here:
no `past_key_values` (a cache, which `use_cache=True` creates by itself, switches the detection
off, so every call passes `use_cache=False`), and an attention implementation that goes
through that mask machinery (`PACKED_ATTENTION`; any other one would see no mask at all and
let samples attend to each other, so `packing_reason` refuses it). The tests check packed ==
padded log-probs and gradients on every family of `rlvr.models.families`, sdpa and eager.

Per-token outputs are read at `packed_index` (the column that predicts each completion token),
so callers get [B, T] tensors as with the padded layouts; the LM head (or fused log-probs,
`rlvr.trainer.heads`) runs on those columns only.
"""

from __future__ import annotations

# attention implementations whose masks transformers 5 builds from packed position ids (read in
# masking_utils 5.19: sdpa/eager/flex get the block-diagonal mask, flash_* get cu_seqlens)
PACKED_ATTENTION = frozenset({"sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3"})


def packing_reason(model) -> str | None:
    """None when the packed layout is exact for `model` (the HF model, under any wrapper); else why not."""
    inner = getattr(model, "module", model)  # DeepSpeedEngine
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    attn = getattr(inner.config, "_attn_implementation", None)
    if attn not in PACKED_ATTENTION:
        return (f"attention implementation {attn!r} does not build transformers' packed-sequence mask "
                f"(one of {sorted(PACKED_ATTENTION)} does)")
    return None


def packed_forward(model, batch, device, **kwargs):
    """`model` on a `collate_packed` batch's row (see the module docstring for why each argument)."""
    return model(input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device),
                 attention_mask=None, use_cache=False, **kwargs)


def packed_values(model, batch, device):
    """A value model's (`rlvr.trainer.critic`) output at every completion token's predicting
    column, [B, T] (0 past a completion's end)."""
    out = packed_forward(model, batch, device).logits  # [1, N, 1]
    valid = batch["completion_tokens"].to(device)
    return out[0, batch["packed_index"].to(device), 0].float() * valid
