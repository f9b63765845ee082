"""SFT rows: `{"messages": [...]}` conversations as `TrainSample`s whose loss is on the assistant's
tokens only (`rlvr sft`, `rlvr.loop.sft`).

The mask is the one multi-turn episodes train with (`rlvr.rollout.episodes`), so a
conversation trains on exactly the tokens the model would have sampled in an episode:

    prompt      the chat template of the messages before the first assistant message, with
                the generation prompt (as `rlvr.data.prompts.render_prompts` renders a prompt)
    each turn   the assistant message's content tokenized on its own, then the tokenizer's
                eos (the end-of-turn the engine stops at): loss mask 1
    between     the template's tokens after that end-of-turn for the messages up to the next
                assistant turn, its opening included (`observation_tokens`): loss mask 0

Messages after the last assistant turn carry no loss and are left out. Every row gets
advantage 1, so the `nll` loss (`rlvr.algos.nll_loss`) is the cross-entropy on those
tokens; with `token_mean` aggregation the trainer divides by the batch's assistant-token
count over every rank and micro-batch.

Files are JSONL, one conversation per line; every problem is a `DatasetError` naming the
file and line. A row longer than `sft.max_length` tokens is dropped and counted
(`sft/skipped_too_long`), never cut: a cut conversation would teach the model to stop mid-answer.
"""

from __future__ import annotations

import json
import os

from rlvr.data.rows import DatasetError
from rlvr.types import TrainSample


def conversation_sample(messages: list[dict], tokenizer, template_kwargs: dict | None = None) -> TrainSample:
    """One conversation as a `TrainSample` (see the module docstring); ValueError when it has no
    assistant message after some other message."""
    from rlvr.data.prompts import observation_tokens

    first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
    if first is None:
        raise ValueError("no assistant message: nothing to train on")
    if first == 0:
        raise ValueError("the first message is the assistant's: there is no prompt before it")
    kw = dict(template_kwargs or {})
    eos_id, eos = tokenizer.eos_token_id, tokenizer.eos_token
    if eos_id is None:
        raise ValueError("the tokenizer has no eos token: an assistant turn's end cannot be trained")
    prompt = tokenizer.apply_chat_template(messages[:first], tokenize=False, add_generation_prompt=True, **kw)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    mask: list[int] = []
    i = first
    while i < len(messages):
        turn = tokenizer(messages[i]["content"], add_special_tokens=False)["input_ids"] + [eos_id]
        ids += turn
        mask += [1] * len(turn)
        j = next((k for k in range(i + 1, len(messages)) if messages[k]["role"] == "assistant"), None)
        if j is None:
            break
        between = observation_tokens(tokenizer, messages[i + 1:j], eos, kw)
        ids += between
        mask += [0] * len(between)
        i = j
    return TrainSample(list(prompt_ids), ids, 1.0, [0.0] * len(ids), mask)


def read_conversations(path: str, messages_key: str = "messages") -> list[tuple[int, list[dict]]]:
    """(line number, messages) of every non-blank line of a JSONL file of conversations."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise DatasetError(path, "no such file")
    out = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            lines = list(f)
        except UnicodeDecodeError as e:
            raise DatasetError(path, f"not UTF-8 text ({e.reason})") from None
    for lineno, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError as e:
            raise DatasetError(path, f"not valid JSON ({str(e)[:120]})", line=lineno) from None
        messages = row.get(messages_key) if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise DatasetError(path, f"needs a non-empty {messages_key!r} list of {{role, content}} strings "
                               "(sft.messages_key names the field)", line=lineno)
        out.append((lineno, [{"role": m["role"], "content": m["content"]} for m in messages]))
    if not out:
        raise DatasetError(path, "no rows")
    return out


def load_sft_samples(path: str, tokenizer, template_kwargs: dict | None, max_length: int,
                     messages_key: str = "messages") -> tuple[list[TrainSample], int]:
    """(the file's conversations as samples, how many were dropped as longer than `max_length`
    tokens); a conversation without an assistant turn is a `DatasetError` naming its line."""
    samples, skipped = [], 0
    for lineno, messages in read_conversations(path, messages_key):
        try:
            sample = conversation_sample(messages, tokenizer, template_kwargs)
        except ValueError as e:
            raise DatasetError(os.path.expanduser(path), str(e), line=lineno) from None
        if len(sample.prompt_ids) + len(sample.completion_ids) > max_length:
            skipped += 1
            continue
        samples.append(sample)
    if not samples:
        raise DatasetError(path, f"every row is longer than sft.max_length={max_length} tokens")
    return samples, skipped


def token_mean_nll(logprobs: list[list[float]], samples: list[TrainSample]) -> float:
    """The token-mean negative log-likelihood over the loss tokens of `samples`, from each
    sample's per-token log-probs (`TrainerGroup.probe_logprobs`): `eval/loss`.

    >>> token_mean_nll([[-1.0, -2.0], [-4.0]], [TrainSample([1], [5, 6], 1.0, [0, 0], [1, 0]), TrainSample([1], [7], 1.0, [0])])
    2.5
    """
    total = count = 0.0
    for logp, s in zip(logprobs, samples):
        mask = s.loss_mask if s.loss_mask is not None else [1] * len(s.completion_ids)
        total -= sum(x for x, m in zip(logp, mask) if m)
        count += sum(mask)
    return total / max(count, 1.0)
