"""Turn scored samples into padded training tensors, and split them across ranks.

Layout of one micro-batch (B rows): prompts are left-padded and completions
right-padded, so every completion starts at the same column `P`:

    [pad pad p0 p1 p2 | c0 c1 c2 pad]      P = longest prompt
    [ p0  p1 p2 p3 p4 | c0 c1 pad pad]

The logits that predict completion tokens are then one contiguous slice
(columns P-1 .. L-2) for every row, so the LM head only runs on those columns.
Position ids are counted over real tokens, so left padding does not shift them.

Shared prompts (`collate_shared`): GRPO trains on n completions of every prompt, and
the plain layout runs each prompt n times. The shared layout holds each distinct
prompt once (rows of `prompt_ids`) and the completions separately; the trainer runs
the prompts through the model with the KV cache on, gathers each completion's
prompt keys/values from it, and runs the completions on top (`shared_prompt_logits`
in `rlvr.trainer.worker`). The prompt's forward and backward run once per micro-batch
instead of once per completion, and attention only spans prompt + own completion.
The log-probs and gradients equal the plain layout's (a unit test checks).

Packed (`collate_packed`, `trainer.pack_sequences`): every sample of the micro-batch, prompt
then completion, concatenated into one row with no pad token, position ids restarting at 0 at
each sample; the forward (`rlvr.trainer.packed`) keeps attention inside each sample:

    [p0 p1 p2 c0 c1 c2 | p0 p1 p2 p3 p4 c0 c1]    positions [0 1 2 3 4 5 | 0 1 2 3 4 5 6]

`packed_index` [B, T] names the column whose hidden state predicts each completion token
(sample start + prompt length - 1 + t), so the per-token outputs come back as [B, T] like the
other layouts'. With shared prompts on, a prompt is in the row once, then each completion
that shares it, positions continuing after the prompt, each completion attending to the
prompt and itself (`collate_packed(share=True)`):

    [p0 p1 p2 a0 a1 b0 b1 b2]    positions [0 1 2 3 4 3 4 5]
"""

from __future__ import annotations

import torch

from rlvr.types import TrainSample


def _completions(samples: list[TrainSample], pad_id: int) -> dict[str, torch.Tensor]:
    """What both layouts hold per completion: targets (the completion tokens), completion_mask
    (the tokens that carry loss: all of them, or a multi-turn episode's sampled ones),
    completion_tokens (every token there, observations included: what attention sees),
    rollout_logprobs and advantages [B, T] right-padded (a sample's scalar advantage on every
    token, or its `token_advantages`); with a critic's targets (`returns`) also returns and
    old_values [B, T]."""
    B, T = len(samples), max(max(len(s.completion_ids) for s in samples), 1)
    targets = torch.full((B, T), pad_id, dtype=torch.long)
    completion_tokens = torch.zeros((B, T), dtype=torch.long)
    floats = ["completion_mask", "rollout_logprobs", "advantages"]
    critic = any(s.returns is not None for s in samples)
    floats += ["returns", "old_values"] if critic else []
    out = {k: torch.zeros((B, T), dtype=torch.float32) for k in floats}
    for i, s in enumerate(samples):
        c = len(s.completion_ids)
        targets[i, :c] = torch.tensor(s.completion_ids, dtype=torch.long)
        out["completion_mask"][i, :c] = 1.0 if s.loss_mask is None else torch.tensor(s.loss_mask[:c], dtype=torch.float32)
        completion_tokens[i, :c] = 1
        out["rollout_logprobs"][i, :c] = torch.tensor(s.rollout_logprobs[:c], dtype=torch.float32)
        adv = s.advantage if s.token_advantages is None else torch.tensor(s.token_advantages[:c], dtype=torch.float32)
        out["advantages"][i, :c] = adv
        if critic and s.returns is not None:
            out["returns"][i, :c] = torch.tensor(s.returns[:c], dtype=torch.float32)
            out["old_values"][i, :c] = torch.tensor(s.values[:c], dtype=torch.float32)
    return {"targets": targets, "completion_tokens": completion_tokens, **out}


def collate(samples: list[TrainSample], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad samples into tensors: input_ids/attention_mask/position_ids [B, L],
    targets/completion_mask/rollout_logprobs/advantages [B, T] (and returns/old_values)."""
    completions = _completions(samples, pad_id)
    P = max(len(s.prompt_ids) for s in samples)
    T = completions["targets"].shape[1]
    B, L = len(samples), P + T
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    for i, s in enumerate(samples):
        p, c = len(s.prompt_ids), len(s.completion_ids)
        input_ids[i, P - p : P] = torch.tensor(s.prompt_ids, dtype=torch.long)
        attention_mask[i, P - p : P + c] = 1
    input_ids[:, P:] = completions["targets"]
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        **completions,
        "targets": input_ids[:, P:],
        "prompt_len": torch.tensor(P),
    }


def collate_shared(samples: list[TrainSample], pad_id: int, always: bool = False) -> dict[str, torch.Tensor] | None:
    """The shared-prompt layout (see the module docstring), or None when no two consecutive
    samples share a prompt (use `collate` then) unless `always`. Ranks that run collectives
    inside the forward (FSDP2 sharding, ZeRO-3) must all use one layout: a rank running one
    forward while another runs two deadlocked 2-rank FSDP2 (measured), so they pass `always`.

    prompt_ids/prompt_mask/prompt_positions [R, P]: each distinct prompt once, left-padded;
    prompt_row [B]: the prompt row of each sample; targets (= the completion tokens),
    completion_mask, rollout_logprobs [B, T] right-padded; attention_mask [B, P + T] (the
    prompt row's mask, then the completion's) and position_ids [B, T] (continuing after
    the prompt's real tokens); advantages [B, T]."""
    rows: list[list[int]] = []
    prompt_row: list[int] = []
    for s in samples:
        if not rows or rows[-1] != s.prompt_ids:
            rows.append(s.prompt_ids)
        prompt_row.append(len(rows) - 1)
    if len(rows) == len(samples) and not always:
        return None
    completions = _completions(samples, pad_id)
    P, T = max(len(p) for p in rows), completions["targets"].shape[1]
    prompt_ids = torch.full((len(rows), P), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(rows), P), dtype=torch.long)
    for r, p in enumerate(rows):
        prompt_ids[r, P - len(p):] = torch.tensor(p, dtype=torch.long)
        prompt_mask[r, P - len(p):] = 1
    row = torch.tensor(prompt_row, dtype=torch.long)
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "prompt_positions": (prompt_mask.cumsum(-1) - 1).clamp(min=0),
        "prompt_row": row,
        "attention_mask": torch.cat([prompt_mask[row], completions["completion_tokens"]], dim=1),
        "position_ids": prompt_mask.sum(-1)[row, None] + torch.arange(T),
        **completions,
    }


def collate_packed(samples: list[TrainSample], pad_id: int, share: bool = False) -> dict[str, torch.Tensor]:
    """The packed layout (see the module docstring): input_ids/position_ids [1, N] (N = the sum of
    the samples' prompt + completion lengths), segments [B, 4] (each sample's prompt start, prompt
    length, completion start, completion length in the row), seq_lens [B] (prompt + completion),
    packed_index [B, T] (0 past a completion's end, where completion_tokens is 0) and
    `_completions`' [B, T] tensors.

    `share`: a prompt that consecutive samples share is in the row once, followed by each of
    their completions, whose positions continue after it (each completion attends to the prompt
    and itself: `rlvr.trainer.packed.varlen_attention`); seq_lens is then absent (no
    transformers attention can run this row)."""
    completions = _completions(samples, pad_id)
    T = completions["targets"].shape[1]
    ids: list[int] = []
    positions: list[torch.Tensor] = []
    segments = torch.zeros((len(samples), 4), dtype=torch.long)
    packed_index = torch.zeros((len(samples), T), dtype=torch.long)
    for i, s in enumerate(samples):
        p, c = len(s.prompt_ids), len(s.completion_ids)
        if not (share and i and samples[i - 1].prompt_ids == s.prompt_ids):
            start = len(ids)
            ids += list(s.prompt_ids)
            positions.append(torch.arange(p))
        segments[i] = torch.tensor([start, p, len(ids), c])
        # token 0 is predicted by the prompt's last column, token t by the completion's column t - 1
        packed_index[i, :c] = torch.cat([torch.tensor([start + p - 1]), len(ids) + torch.arange(max(c - 1, 0))])[:c]
        ids += list(s.completion_ids)
        positions.append(torch.arange(p, p + c))
    out = {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "position_ids": torch.cat(positions)[None],
        "segments": segments,
        "packed_index": packed_index,
        **completions,
    }
    if not share:
        out["seq_lens"] = segments[:, 1] + segments[:, 3]
    return out


def shard_for_ranks(samples: list, world_size: int) -> list[list]:
    """Split samples into `world_size` contiguous, nearly equal shards (contiguous keeps a
    prompt's completions together, which `collate_shared` runs once)."""
    return split_micro(samples, world_size)


def num_micro_batches(shards: list[list], micro_batch_size: int, max_tokens: int = 0, packed: bool = False) -> int:
    """Micro-batches every rank runs: all ranks must run the same count (collectives).
    `max_tokens` > 0 (`trainer.max_tokens_per_micro`): as many as the rank whose samples need
    the most micro-batches of at most that many tokens (`pack_by_tokens`; `packed`: real tokens)."""
    if max_tokens:
        return max(1, max(len(pack_by_tokens(s, max_tokens, packed)) for s in shards))
    longest = max(len(s) for s in shards)
    return max(1, -(-longest // micro_batch_size))


def _length(s) -> int:
    return len(s.prompt_ids) + len(s.completion_ids)


def padded_tokens(chunk: list) -> int:
    """The plain layout's size of a micro-batch: rows x its longest prompt + completion."""
    return len(chunk) * max((_length(s) for s in chunk), default=0)


def micro_tokens(chunk: list, packed: bool = False) -> int:
    """A micro-batch's size in tokens: `padded_tokens`, or with `packed` (`collate_packed`) the
    sum of its samples' prompt + completion lengths."""
    return sum(_length(s) for s in chunk) if packed else padded_tokens(chunk)


def pack_by_tokens(samples: list, budget: int, packed: bool = False) -> list[list]:
    """Contiguous chunks, each as long as its size (`micro_tokens`) stays within `budget` (a
    sample longer than the budget alone). Greedy is optimal here: any sub-run of a chunk that
    fits also fits (both sizes only grow with the chunk), so extending while it fits gives the
    fewest chunks."""
    chunks: list[list] = []
    current: list = []
    longest = total = 0
    for s in samples:
        n = _length(s)
        size = total + n if packed else (len(current) + 1) * max(longest, n)  # micro_tokens(current + [s])
        if current and size > budget:
            chunks.append(current)
            current, longest, total = [], 0, 0
        current.append(s)
        longest, total = max(longest, n), total + n
    return chunks + ([current] if current else [])


def split_by_tokens(samples: list, count: int, packed: bool = False) -> list[list]:
    """Exactly `count` contiguous chunks, in order, with the largest size (`micro_tokens`) as
    small as it can be (the smallest budget `pack_by_tokens` fits in `count`, by bisection); the
    chunks it does not need are empty (the trainer runs those as all-masked rows)."""
    if not samples:
        return [[] for _ in range(count)]
    low, high = max(_length(s) for s in samples), micro_tokens(samples, packed)
    while low < high:
        mid = (low + high) // 2
        if len(pack_by_tokens(samples, mid, packed)) <= count:
            high = mid
        else:
            low = mid + 1
    chunks = pack_by_tokens(samples, low, packed)
    return chunks + [[] for _ in range(count - len(chunks))]


def split_micro(samples: list, count: int) -> list[list]:
    """Split into exactly `count` nearly-equal chunks (some may be empty)."""
    base, extra = divmod(len(samples), count)
    out, start = [], 0
    for i in range(count):
        size = base + (1 if i < extra else 0)
        out.append(samples[start : start + size])
        start += size
    return out
