"""`trainer.fused_logprobs`: the trainer's log-probs (and entropy) from the model's final hidden
states and its LM head weight (`rlvr.trainer.logprobs`), never through `[B, T, V]` logits.

How the hidden states and the weight are reached: for the duration of one forward, the LM
head module's `forward` is replaced (an instance attribute, like `rlvr.trainer.compile`) by
one that receives the hidden states HF's CausalLM forward passes it (`logits_to_keep`
columns) and returns per-token (log-prob, entropy) instead of logits. The head is still
*called as a module inside the model's forward*, so whatever the backend hangs on it works
unchanged: FSDP2's root unit has its parameters (embeddings, final norm, head) unsharded
during the forward and again before the backward (a hook on the forward's outputs), and
DeepSpeed ZeRO-3 gathers the head's weight in its pre-forward and pre-backward hooks. Calling
the decoder (`model.model`) directly and using `lm_head.weight` afterwards would bypass both
and meet sharded parameters. Tied embeddings need nothing: the head's weight is the
embedding matrix.

Only the positions that hold a completion token are computed (`completion_tokens`): right
padding costs nothing; log-probs and entropy there are 0 (every consumer masks them).

Fallbacks to the logits path (`fused_head_reason` says why; the trainer prints it once):
model types whose CausalLM forward does more to the logits than `lm_head(hidden)`: final
logit soft-capping (Gemma 2/3), logit scales (Cohere, Granite) and any type not in
`FUSED_MODEL_TYPES` (each was read in transformers 5.x); and an LM head that is not a plain
`nn.Linear`: LoRA on `lm_head` (`lora.target_modules`) or peft's `modules_to_save` wrapper.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from rlvr.trainer.logprobs import fused_token_logprobs
from rlvr.trainer.packed import hf_model, packed_forward

# CausalLM forwards that end in `logits = self.lm_head(hidden_states[:, slice_indices, :])`
# with nothing applied to the logits after it (read in transformers 5.x modeling files)
FUSED_MODEL_TYPES = frozenset({"qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "llama", "mistral", "olmo2", "phi3"})


def fused_head_reason(model) -> str | None:
    """None when the fused path applies to `model`; else why it falls back to logits."""
    hf = hf_model(model)
    config = hf.config
    model_type = getattr(config, "model_type", None)
    if getattr(config, "final_logit_softcapping", None) is not None:
        return f"{model_type} soft-caps its final logits (config.final_logit_softcapping)"
    if model_type not in FUSED_MODEL_TYPES:
        return f"model type {model_type!r} is not one whose logits are lm_head(hidden) alone ({sorted(FUSED_MODEL_TYPES)})"
    head = hf.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        return f"the LM head is a {type(head).__name__}, not a plain Linear (LoRA or modules_to_save on lm_head)"
    return None


@contextmanager
def _head_forward(head: torch.nn.Module, forward):
    """`head.forward = forward` for the duration (the class's forward, or what was set, after)."""
    previous = head.__dict__.get("forward")
    head.forward = forward
    try:
        yield
    finally:
        if previous is None:
            del head.forward
        else:
            head.forward = previous


def completion_logprobs(model, batch, device, temperature: float = 1.0, entropy: bool = False,
                        chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log-probs [B, T], entropy [B, T] or None) of a `collate`, `collate_shared` or `collate_packed` batch's
    completion tokens under `model`, the fused way (see the module docstring); equal to
    `token_logprobs(completion_logits(...))` / `entropy_from_logits` where `completion_tokens`
    is 1, and 0 elsewhere."""
    head = hf_model(model).get_output_embeddings()
    targets = batch["targets"].to(device)
    valid = batch["completion_tokens"].to(device).bool()
    width = 2 if entropy else 1

    def rows(hidden):  # [N, H] -> [N, width] for the N valid positions, in order
        logp, ent = fused_token_logprobs(hidden, head.weight, head.bias, targets[valid], temperature,
                                         entropy=entropy, chunk=chunk)
        return torch.stack([logp, ent], -1) if entropy else logp[:, None]

    def fused(hidden):  # [B, T, H] -> [N, width]
        return rows(hidden[valid])

    if "packed_index" in batch:  # one row, no padding: [1, N, H] -> the valid predicting columns, [n, H]
        index = batch["packed_index"].to(device)
        with _head_forward(head, lambda hidden: rows(hidden[0][index[valid]])):
            picked = packed_forward(model, batch, device).logits
    elif "prompt_row" in batch:
        row = batch["prompt_row"].to(device)
        with _head_forward(head, lambda hidden: hidden):  # the prompts' last hidden state, [R, 1, H]
            first = model(input_ids=batch["prompt_ids"].to(device), attention_mask=batch["prompt_mask"].to(device),
                          position_ids=batch["prompt_positions"].to(device), use_cache=True, logits_to_keep=1)
        cache = first.past_key_values
        cache.reorder_cache(row)
        T = targets.shape[1]
        with _head_forward(head, lambda hidden: fused(torch.cat([first.logits[row], hidden[:, :-1]], dim=1))):
            picked = model(input_ids=targets, attention_mask=batch["attention_mask"].to(device),
                           position_ids=batch["position_ids"].to(device), past_key_values=cache, use_cache=True,
                           logits_to_keep=T).logits
    else:
        T = targets.shape[1]
        with _head_forward(head, lambda hidden: fused(hidden[:, :-1])):  # columns P-1 .. L-2
            picked = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                           position_ids=batch["position_ids"].to(device), logits_to_keep=T + 1).logits
    out = picked.new_zeros(*valid.shape, width).index_put((valid,), picked)
    return out[..., 0], (out[..., 1] if entropy else None)


def packed_logits(model, batch, device) -> torch.Tensor:
    """Logits [B, T, V] at the completion positions of a `collate_packed` batch: the head (whatever
    module it is, LoRA included) is called by the model as usual, on those columns only; what the
    CausalLM forward does to the logits after the head (soft-capping, scales) is elementwise."""
    head = hf_model(model).get_output_embeddings()
    index = batch["packed_index"].to(device)
    original = head.forward
    with _head_forward(head, lambda hidden: original(hidden[0][index])):
        return packed_forward(model, batch, device).logits
