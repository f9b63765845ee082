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
  tiny recipe's step took 2.3x the padded layout's with the mask). It also runs rows with shared
  prompts (`collate_packed(share=True)`: a prompt once, then its completions, each attending
  to the prompt and itself, with an explicit [completion, prompt + completion] causal mask),
  which transformers' mask cannot express; the sample structure comes as a `PackedPlan`.

Per-token outputs are read at `packed_index` (the column that predicts each completion token),
so callers get [B, T] tensors as with the padded layouts; the LM head (or fused log-probs,
`rlvr.trainer.heads`) runs on those columns only.
"""

from __future__ import annotations

# attention implementations whose masks transformers 5 builds from packed position ids (read in
# masking_utils 5.19: sdpa/eager/flex get the block-diagonal mask, flash_* get cu_seqlens), and ours
VARLEN = "rlvr_varlen"
PACKED_ATTENTION = frozenset({"sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3", VARLEN})


def hf_model(model):
    """The HF model inside a DeepSpeed engine and/or a peft model."""
    model = getattr(model, "module", model)  # DeepSpeedEngine
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def packing_reason(model) -> str | None:
    """None when the packed layout is exact for `model` (the HF model, under any wrapper); else why not."""
    hf = hf_model(model)
    if not type(hf).__module__.startswith("transformers."):
        return (f"{type(hf).__name__} is not one of transformers' own model classes (remote code?): its "
                f"attention may not keep packed samples apart")
    attn = getattr(hf.config, "_attn_implementation", None)
    if attn not in PACKED_ATTENTION:
        return (f"attention implementation {attn!r} does not build transformers' packed-sequence mask "
                f"(one of {sorted(PACKED_ATTENTION)} does)")
    return None


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


def _rows(spans: list[tuple[int, int]], device):
    """Column indices [R, L] of right-padded rows holding each (start, length) span of the row, and
    the flat indices (into R * L, row-major) of the real ones: integer indices, not a boolean mask,
    so that the attention has no data-dependent shape (`trainer.compile=layers` traces it)."""
    import torch

    width = max(n for _, n in spans)
    offsets = torch.arange(width)
    starts, lengths = torch.tensor([s for s, _ in spans]), torch.tensor([n for _, n in spans])
    valid = offsets[None] < lengths[:, None]
    return ((starts[:, None] + offsets[None]) * valid).to(device), valid.flatten().nonzero()[:, 0].to(device)


class PackedPlan:
    """How `varlen_attention` batches a packed row, worked out once per forward for every layer:
    `heads` are spans that attend causally to themselves (a prompt, or a prompt and its one
    completion right after it), gathered into right-padded rows [R, L] (right padding and a
    causal mask: the real queries never see a pad key); `tails` are the completions after a
    shared prompt, each gathered into a row [C, W] whose keys are its head row then itself,
    under an explicit [C, 1, W, L + W] mask (head keys up to the prompt's length; causal inside
    the completion)."""

    def __init__(self, segments, device, windows=(None,)):
        import torch

        heads, tails = [], []
        for start, p, completions in packed_groups(segments):
            if len(completions) == 1 and completions[0][0] == start + p:
                heads.append((start, p + completions[0][1]))
                continue
            heads.append((start, p))
            tails += [(c0, c, len(heads) - 1) for c0, c in completions if c]
        self.head_idx, self.head_real = _rows(heads, device)
        self.cols = self.head_idx.flatten()[self.head_real]
        self.tail_idx = None
        if tails:
            self.tail_idx, self.tail_real = _rows([(c0, c) for c0, c, _ in tails], device)
            self.tail_head = torch.tensor([h for _, _, h in tails], device=device)
            self.prompt_len = torch.tensor([heads[h][1] for _, _, h in tails], device=device)
            self.cols = torch.cat([self.cols, self.tail_idx.flatten()[self.tail_real]])
        self.masks: dict = {}  # per sliding window (None: none)
        for window in windows:  # made here, not in the (maybe compiled) layers: no side effects there
            self.head_mask(window)
            if tails:
                self.tail_mask(window)
        # Every size here changes from row to row: symbolic from the first compile of the layers
        # (`trainer.compile=layers`), not specialized and recompiled on the next row (a recompile
        # on 2 cores costs ~10 s). No effect when nothing is compiled.
        for t in [v for v in vars(self).values() if isinstance(v, torch.Tensor)] + list(self.masks.values()):
            if t.dim():
                torch._dynamo.maybe_mark_dynamic(t, list(range(t.dim())))

    def head_mask(self, window):
        """None (SDPA's is_causal) or the [L, L] causal mask with a sliding window."""
        import torch

        if window is None or self.head_idx.shape[1] <= window:
            return None
        if ("head", window) not in self.masks:
            i = torch.arange(self.head_idx.shape[1], device=self.head_idx.device)
            self.masks["head", window] = (i[None] <= i[:, None]) & (i[:, None] - i[None] < window)
        return self.masks["head", window]

    def tail_mask(self, window):
        """[C, 1, W, L + W]: completion token i (position prompt length + i) sees its head row's
        first prompt-length keys and its own tokens up to i (within the window)."""
        import torch

        if ("tail", window) not in self.masks:
            device = self.tail_idx.device
            i = torch.arange(self.tail_idx.shape[1], device=device)[None, None, :, None]  # [1, 1, W, 1]
            j = torch.arange(self.head_idx.shape[1], device=device)[None, None, None, :]  # [1, 1, 1, L]
            p = self.prompt_len[:, None, None, None]
            to_prompt = j < p
            to_self = i.transpose(2, 3) <= i  # [1, 1, W, W]: key i' <= query i
            if window is not None:
                to_prompt = to_prompt & (p + i - j < window)
                to_self = to_self & (i - i.transpose(2, 3) < window)
            n, w, length = len(p), self.tail_idx.shape[1], self.head_idx.shape[1]
            # a tensor of its own (not a view): no guard on a base tensor's strides when compiled
            self.masks["tail", window] = torch.cat([to_prompt.expand(n, 1, w, length), to_self.expand(n, 1, w, w)],
                                                   dim=3)
        return self.masks["tail", window]


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     sliding_window=None, packed_plan: PackedPlan | None = None, **kwargs):
    """Causal attention inside each packed sample ([1, heads, N, D] in, [1, N, heads, D] out, as
    transformers' attention functions), batched by `packed_plan` into one SDPA call over the
    heads and one over the tails. No [N, N] mask and none of the N^2 work across samples that
    the block-diagonal mask still costs on CPU."""
    import torch
    import torch.nn.functional as F

    if packed_plan is None or attention_mask is not None:
        raise ValueError(f"{VARLEN} attention runs packed batches only (rlvr.trainer.packed.packed_forward)")
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        raise ValueError(f"{VARLEN} attention: attention logit soft-capping / sinks are not supported")
    plan, gqa = packed_plan, query.shape[1] != key.shape[1]
    dropout = dropout if module.training else 0.0

    def gather(x, idx):  # [1, h, N, D] -> [R, h, L, D]
        return x[0][:, idx].transpose(0, 1)

    heads = [gather(x, plan.head_idx) for x in (query, key, value)]
    mask = plan.head_mask(sliding_window)
    out = F.scaled_dot_product_attention(*heads, attn_mask=mask, dropout_p=dropout, is_causal=mask is None,
                                         scale=scaling, enable_gqa=gqa)
    parts = [out.transpose(1, 2).flatten(0, 1)[plan.head_real]]  # [n, h, D], real columns in `plan.cols` order
    if plan.tail_idx is not None:
        q = gather(query, plan.tail_idx)
        k = torch.cat([heads[1][plan.tail_head], gather(key, plan.tail_idx)], dim=2)
        v = torch.cat([heads[2][plan.tail_head], gather(value, plan.tail_idx)], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=plan.tail_mask(sliding_window), dropout_p=dropout,
                                             scale=scaling, enable_gqa=gqa)
        parts.append(out.transpose(1, 2).flatten(0, 1)[plan.tail_real])
    values = torch.cat(parts)
    return values.new_zeros(query.shape[2], *values.shape[1:]).index_put((plan.cols,), values)[None], None


def use_varlen_attention(model) -> bool:
    """Switch an sdpa/eager model to `varlen_attention` (registered with transformers by name). For
    good: under gradient checkpointing the layers' recomputation must pick the same function as
    their forward. The model then runs packed batches only (`packed_forward`; others raise). Any
    other implementation is left alone (flash/flex have their own varlen paths). Returns whether
    the model runs it (only it runs shared-prompt rows)."""
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN, varlen_attention)
    config = hf_model(model).config
    if config._attn_implementation in ("sdpa", "eager"):
        config._attn_implementation = VARLEN
    return config._attn_implementation == VARLEN


def packed_forward(model, batch, device, **kwargs):
    """`model` on a `collate_packed` batch's row (see the module docstring for why each argument);
    a shared-prompt row (no seq_lens) needs `varlen_attention`."""
    import torch

    config = hf_model(model).config
    attn = config._attn_implementation
    if attn == VARLEN:
        window = getattr(config, "sliding_window", None)
        kwargs["packed_plan"] = PackedPlan(batch["segments"], device, {None, window})
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
