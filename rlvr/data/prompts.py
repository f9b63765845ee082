"""Prompts: rows rendered into token ids for the model, the ones too long for it dropped, and
the sampler that decides each step's prompts.

Rendering. With `apply_chat_template`, a `prompt` becomes one user message
(after the optional system message) and the tokenizer's chat template adds the
generation prompt; the text is tokenized with `add_special_tokens=False`
because templates already contain any BOS. Without it, the raw prompt string
is tokenized with the tokenizer's usual special tokens (a base model's BOS);
a system prompt and `messages` are then flattened to their contents joined
by blank lines. A tokenizer without a chat template (a base model) falls back
to the raw format with one warning, even when `apply_chat_template` is true.

Length. `drop_too_long` drops prompts that leave no room for the completion
within the model's max length and counts them (the driver logs
`data/skipped_too_long`); a dataset none of whose prompts fits is an error.

Sampling. `PromptSampler` walks a fresh seeded permutation per epoch and
batches run across epoch boundaries. Its state is (epoch, position), so a run
resumed from a checkpoint draws exactly the sequence an uninterrupted run would.
"""

from __future__ import annotations

import random
import sys
from dataclasses import replace
from typing import Iterable

from rlvr.config import DataConfig
from rlvr.data.rows import DatasetError
from rlvr.types import Prompt

# --- rendering ----------------------------------------------------------------------------

def chat_messages(row: dict, system_prompt: str | None) -> list[dict]:
    """A row as chat messages: its `messages`, or its `prompt` as one user message; the system
    prompt (if any) first."""
    messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
    if system_prompt:
        messages = [{"role": "system", "content": system_prompt}] + list(messages)
    return messages


TOKENIZE_BATCH = 1024  # texts per tokenizer call in `render_prompts`


def render_prompts(rows: Iterable[dict], tokenizer, data_cfg: DataConfig, tools: list[dict] | None = None,
                   start=None) -> list[Prompt]:
    """Turn rows into `Prompt`s: chat template (with generation prompt) or the raw string.
    Multi-turn episodes: `tools` (their schemas) go to the template as `tools=`, and
    `start(row)` (the environment's `reset`) gives the first messages."""
    use_template = data_cfg.apply_chat_template
    if use_template and not has_chat_template(tokenizer):
        raise ValueError("data.apply_chat_template is true but the tokenizer has no chat template "
                         "(set data.apply_chat_template: false for a base model)")
    rendered = []  # (row, messages, text)
    for row in rows:
        messages = start(row) if start is not None else chat_messages(row, data_cfg.system_prompt)
        if use_template:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                 **template_kwargs(data_cfg, tools))
        else:
            text = row["prompt"] if "prompt" in row and not data_cfg.system_prompt else \
                "\n\n".join(m["content"] for m in messages)
        rendered.append((row, messages, text))
    # Tokenized in batches, one call per TOKENIZE_BATCH texts instead of one per text (the
    # default 20k-prompt set renders in 0.88 s instead of 1.02 s at every run start); same ids.
    prompts = []
    for start_at in range(0, len(rendered), TOKENIZE_BATCH):
        chunk = rendered[start_at:start_at + TOKENIZE_BATCH]
        ids = tokenizer([text for _, _, text in chunk], add_special_tokens=not use_template)["input_ids"]
        for (row, messages, text), token_ids in zip(chunk, ids):
            prompts.append(Prompt(text=text, token_ids=list(token_ids), answer=row["answer"],
                                  metadata=dict(row.get("metadata", {})), messages=list(messages)))
    return prompts


def observation_tokens(tokenizer, messages: list[dict], end_of_turn: str, template_kwargs: dict | None = None
                       ) -> list[int]:
    """The tokens the chat template puts after an assistant turn that ended with `end_of_turn`
    (the text of its last token, an end-of-turn such as `<|im_end|>`) when `messages` (tool
    results, a user message) follow, up to and including the next assistant turn's opening.

    Multi-turn episodes keep every sampled token as it was sampled and append only these:
    the template renders a fixed stand-in conversation with and without `messages`, and the
    difference after the stand-in assistant's end-of-turn is tokenized on its own (it starts
    right after a special token, so no merge can cross the boundary).
    """
    base = [{"role": "user", "content": "."}, {"role": "assistant", "content": "."}]
    kw = dict(template_kwargs or {})
    head = tokenizer.apply_chat_template(base, tokenize=False, **kw)
    full = tokenizer.apply_chat_template(base + list(messages), tokenize=False, add_generation_prompt=True, **kw)
    cut = head.rfind(end_of_turn)
    if not end_of_turn or cut < 0 or full[:cut + len(end_of_turn)] != head[:cut + len(end_of_turn)]:
        raise ValueError(f"the chat template does not end an assistant turn with {end_of_turn!r} followed by the "
                         "next messages; multi-turn episodes need one that does")
    return tokenizer(full[cut + len(end_of_turn):], add_special_tokens=False)["input_ids"]


def template_kwargs(data_cfg: DataConfig, tools: list[dict] | None = None) -> dict:
    """Extra chat-template variables: `data.chat_template_kwargs`, plus `enable_thinking` when set
    (Qwen3's template reads it; a template that does not simply ignores it), plus `tools`.

    >>> template_kwargs(DataConfig(enable_thinking=False, chat_template_kwargs={"x": 1}))
    {'x': 1, 'enable_thinking': False}
    """
    out = dict(data_cfg.chat_template_kwargs)
    if data_cfg.enable_thinking is not None:
        out["enable_thinking"] = data_cfg.enable_thinking
    if tools:
        out["tools"] = tools
    return out


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def load_train_and_eval(data_cfg: DataConfig, tokenizer, tools: list[dict] | None = None,
                        start=None) -> tuple[list[Prompt], list[Prompt]]:
    """Rendered (train, eval) prompts; eval is empty when `data.eval_path` is None (`tools` and
    `start`: multi-turn episodes, see `render_prompts`).

    A tokenizer without a chat template (a base model) falls back to the raw prompt
    format, with one warning, instead of failing when `data.apply_chat_template` is true.
    """
    if data_cfg.apply_chat_template and not has_chat_template(tokenizer):
        print("[rlvr] warning: the tokenizer has no chat template, so prompts use the raw prompt format "
              "(set data.apply_chat_template: false to say so and silence this warning)", file=sys.stderr, flush=True)
        data_cfg = replace(data_cfg, apply_chat_template=False)
    from rlvr.data.sources import train_and_eval_rows  # sources, mixing, held-out split

    train_rows, eval_rows = train_and_eval_rows(data_cfg)
    train = render_prompts(train_rows, tokenizer, data_cfg, tools, start)
    return train, render_prompts(eval_rows, tokenizer, data_cfg, tools, start) if eval_rows is not None else []


def drop_too_long(prompts: list[Prompt], max_new_tokens: int, max_model_len: int, source: str,
                  tokens_key: str = "rollout.max_tokens", limit: str = "") -> tuple[list[Prompt], int]:
    """The prompts whose tokens plus `max_new_tokens` fit in `max_model_len`, and how many did not.

    `max_model_len` is the model's (its config's `max_position_embeddings`, or the engine's
    `max_model_len` if smaller); `source` (the dataset path) and `tokens_key` (the recipe key
    that set `max_new_tokens`) name the culprits when no prompt fits, which is a `DatasetError`;
    `limit` says what else bounds the length (multi-turn: " (or rollout.multi_turn.max_total_tokens)").

    >>> ps = [Prompt("a", [1] * 10, "1"), Prompt("b", [1] * 20, "2")]
    >>> kept, skipped = drop_too_long(ps, max_new_tokens=8, max_model_len=24, source="t.jsonl")
    >>> [p.text for p in kept], skipped
    (['a'], 1)
    """
    budget = max_model_len - max_new_tokens
    kept = [p for p in prompts if len(p.token_ids) <= budget]
    if prompts and not kept:
        shortest = min(len(p.token_ids) for p in prompts)
        room = (f"{tokens_key}={max_new_tokens} leaves no room for a prompt" if budget < 1 else
                f"every prompt is longer than {budget} tokens (the shortest has {shortest})")
        raise DatasetError(source, f"all {len(prompts)} prompts are too long for the model's max length "
                                   f"{max_model_len}{limit}: {room}; "
                                   f"lower {tokens_key} or shorten the prompts")
    return kept, len(prompts) - len(kept)


def model_max_len(model_path: str, engine_kwargs: dict) -> int | None:
    """The engines' max sequence length: the model's, or `rollout.engine_kwargs.max_model_len`."""
    from transformers import AutoConfig

    limits = [getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None),
              engine_kwargs.get("max_model_len")]
    return min((x for x in limits if x), default=None)


def drop_prompts_too_long(train: list[Prompt], held_out: list[Prompt], max_len: int | None, data_cfg: DataConfig,
                          max_tokens: int, eval_max_tokens: int | None, limit: str = ""):
    """Train and eval prompts with no room for the completion within `max_len` are skipped
    (counted in `data/skipped_too_long` and `data/eval_skipped_too_long`, with a warning); all
    of them too long is an error. `max_tokens` is `rollout.max_tokens`, `eval_max_tokens`
    `eval.max_tokens`; `limit` as in `drop_too_long`. Returns (train, eval, the two counts as metrics)."""
    skipped = {"data/skipped_too_long": 0, "data/eval_skipped_too_long": 0}
    if max_len:
        train, skipped["data/skipped_too_long"] = drop_too_long(train, max_tokens, max_len, data_cfg.train_path,
                                                                limit=limit)
        held_out, skipped["data/eval_skipped_too_long"] = drop_too_long(
            held_out, eval_max_tokens or max_tokens, max_len, str(data_cfg.eval_path),
            tokens_key="eval.max_tokens" if eval_max_tokens else "rollout.max_tokens", limit=limit)
        for key, n in skipped.items():
            if n:
                print(f"[rlvr] warning: skipped {n} prompt(s) too long for the model's max length {max_len}{limit} "
                      f"with room for the completion ({key})",
                      flush=True)
    return train, held_out, skipped


# --- sampling -----------------------------------------------------------------------------

class PromptSampler:
    """Deterministic epoch-wise shuffled indices into a dataset of `num_items` prompts
    (`shuffle=False`: file order).

    >>> s = PromptSampler(5, seed=0)
    >>> batch = s.next_batch(3) + s.next_batch(4)  # the second batch runs into epoch 1
    >>> sorted(batch[:5]) == list(range(5)), s.state_dict()["epoch"]
    (True, 1)
    """

    def __init__(self, num_items: int, seed: int, shuffle: bool = True):
        if num_items < 1:
            raise ValueError("PromptSampler needs at least one item")
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle  # False: file order, every epoch
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(self.num_items))
        if not self.shuffle:
            return order
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next_batch(self, k: int) -> list[int]:
        """The next `k` indices; an epoch boundary inside the batch is crossed seamlessly."""
        out: list[int] = []
        while len(out) < k:
            take = min(k - len(out), self.num_items - self.position)
            out += self._order[self.position:self.position + take]
            self.position += take
            if self.position == self.num_items:
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_items": self.num_items}

    def load_state_dict(self, state: dict) -> None:
        if state["num_items"] != self.num_items or state["seed"] != self.seed:
            raise ValueError(f"sampler state is for {state['num_items']} items / seed {state['seed']}, "
                             f"this sampler has {self.num_items} items / seed {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)
