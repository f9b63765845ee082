"""The packed layout's forward (`trainer.pack_sequences`; the layout is `rlvr.trainer.batch.collate_packed`).

One row holds every sample of the micro-batch back to back, no padding; position ids restart
at 0 at each sample, and attention must stay inside each sample. Two ways, both exact (the
tests compare with the padded layout on every family of `rlvr.models.families`):

- transformers' own (flash, flex; and sdpa/eager when `use_varlen_attention` was not called):
  with `attention_mask=None`, those position ids and no cache, transformers 5 finds the sample
  boundaries in the position ids (`masking_utils.find_packed_sequence_indices`: a step other
  than +1 starts a sequence) and builds a block-diagonal causal mask for sdpa/eager/flex; flash
  attention gets the `cu_seq_lens_*` we pass (its varlen kernel). A cache (which `use_cache=True`
  creates by itself) turns the detection off, hence `use_cache=False` on every call; an attention
  implementation outside that machinery would get no mask at all (`packing_reason` refuses it).
- `varlen_attention` (what the trainer uses for sdpa/eager models, `use_varlen_attention`): one
  SDPA call per sample. The block-diagonal mask is [N, N] and SDPA on CPU computes all N^2 scores
  under it, so a 64-sample row costs ~64x the attention of its samples (`bench.packing`: the
  tiny recipe's step took 2.4x the padded layout's with the mask). It also runs rows with shared
  prompts (`collate_packed(share=True)`: a prompt once, then its completions, each attending
  to the prompt and itself, with an explicit [completion, prompt + completion] causal mask),
  which transformers' mask cannot express; the sample structure comes as `packed_groups`.

Per-token outputs are read at `packed_index` (the column that predicts each completion token),
so callers get [B, T] tensors as with the padded layouts; the LM head (or fused log-probs,
`rlvr.trainer.heads`) runs on those columns only.
"""

from __future__ import annotations

# attention implementations whose masks transformers 5 builds from packed position ids (read in
# masking_utils 5.19: sdpa/eager/flex get the block-diagonal mask, flash_* get cu_seqlens), and ours
VARLEN = "rlvr_varlen"
PACKED_ATTENTION = frozenset({"sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3", VARLEN})


def _hf(model):
    inner = getattr(model, "module", model)  # DeepSpeedEngine
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def packing_reason(model) -> str | None:
    """None when the packed layout is exact for `model` (the HF model, under any wrapper); else why not."""
    attn = getattr(_hf(model).config, "_attn_implementation", None)
    if attn not in PACKED_ATTENTION:
        return (f"attention implementation {attn!r} does not build transformers' packed-sequence mask "
                f"(one of {sorted(PACKED_ATTENTION)} does)")
    return None


def _causal(n_q: int, n_k: int, window, device):
    """[n_q, n_k] bool: query i (position n_k - n_q + i) sees key j (position j) when j is not later
    and, with a sliding window, q - kv < window (transformers' rule)."""
    import torch

    q = torch.arange(n_k - n_q, n_k, device=device)[:, None]
    k = torch.arange(n_k, device=device)[None, :]
    return (k <= q) & (q - k < window) if window is not None else k <= q


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     sliding_window=None, packed_groups=None, **kwargs):
    """Causal attention inside each packed sample ([1, heads, N, D] in, [1, N, heads, D] out, as
    transformers' attention functions): per `packed_groups` entry (prompt start, prompt length,
    ((completion start, length), ...))), one SDPA call over a prompt + its one completion when they
    are adjacent; else one over the prompt and one per completion over prompt + itself. No [N, N]
    mask and none of the N^2 work across samples that the block-diagonal mask still costs on CPU."""
    import torch
    import torch.nn.functional as F

    if packed_groups is None or attention_mask is not None:
        raise ValueError(f"{VARLEN} attention runs packed batches only (rlvr.trainer.packed.packed_forward)")
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        raise ValueError(f"{VARLEN} attention: attention logit soft-capping / sinks are not supported")
    gqa = query.shape[1] != key.shape[1]
    dropout = dropout if module.training else 0.0

    def attend(q, k, v):
        n_q, n_k = q.shape[2], k.shape[2]
        plain = n_q == n_k and (sliding_window is None or n_k <= sliding_window)
        mask = None if plain else _causal(n_q, n_k, sliding_window, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=plain,
                                              scale=scaling, enable_gqa=gqa)

    out = []
    for start, p, completions in packed_groups:
        if len(completions) == 1 and completions[0][0] == start + p:  # prompt + its completion, one segment
            end = start + p + completions[0][1]
            out.append(attend(query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]))
            continue
        k_p, v_p = key[:, :, start:start + p], value[:, :, start:start + p]
        out.append(attend(query[:, :, start:start + p], k_p, v_p))
        for c0, c in completions:
            if c:
                k = torch.cat([k_p, key[:, :, c0:c0 + c]], dim=2)
                out.append(attend(query[:, :, c0:c0 + c], k, torch.cat([v_p, value[:, :, c0:c0 + c]], dim=2)))
    return torch.cat(out, dim=2).transpose(1, 2).contiguous(), None


def packed_groups(segments) -> tuple:
    """`collate_packed`'s segments [B, 4] as ((prompt start, prompt length, ((completion start,
    length), ...)), ...), one entry per prompt in the row."""
    groups: list = []
    for start, p, c0, c in segments.tolist():
        if groups and groups[-1][0] == start:
            groups[-1][2].append((c0, c))
        else:
            groups.append((start, p, [(c0, c)]))
    return tuple((start, p, tuple(cs)) for start, p, cs in groups)


def use_varlen_attention(model) -> bool:
    """Switch an sdpa/eager model to `varlen_attention` (registered with transformers by name). For
    good: under gradient checkpointing the layers' recomputation must pick the same function as
    their forward. The model then runs packed batches only (`packed_forward`; others raise). Any
    other implementation is left alone (flash/flex have their own varlen paths). Returns whether
    the model runs it (only it runs shared-prompt rows)."""
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN, varlen_attention)
    config = _hf(model).config
    if config._attn_implementation in ("sdpa", "eager"):
        config._attn_implementation = VARLEN
    return config._attn_implementation == VARLEN


def packed_forward(model, batch, device, **kwargs):
    """`model` on a `collate_packed` batch's row (see the module docstring for why each argument);
    a shared-prompt row (no seq_lens) needs `varlen_attention`."""
    import torch

    attn = _hf(model).config._attn_implementation
    if attn == VARLEN:
        kwargs["packed_groups"] = packed_groups(batch["segments"])
    elif "seq_lens" not in batch:
        raise ValueError(f"a packed row with shared prompts needs {VARLEN} attention, not {attn!r}")
    else:  # flash attention's varlen kernel reads these; the others ignore them
        lens = batch["seq_lens"]
        cu = torch.nn.functional.pad(lens.cumsum(0), (1, 0)).to(device=device, dtype=torch.int32)
        kwargs.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=int(lens.max()), max_length_k=int(lens.max()))
    return model(input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device),
                 attention_mask=None, use_cache=False, **kwargs)


def packed_values(model, batch, device):
    """A value model's (`rlvr.trainer.critic`) output at every completion token's predicting
    column, [B, T] (0 past a completion's end)."""
    out = packed_forward(model, batch, device).logits  # [1, N, 1]
    valid = batch["completion_tokens"].to(device)
    return out[0, batch["packed_index"].to(device), 0].float() * valid
