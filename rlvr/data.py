"""Prompts: the built-in arithmetic task, user JSONL/Parquet files, rendering, sampling.

Rows. Every source is normalised to one row shape before rendering:
`{"prompt": str}` or `{"messages": [{"role", "content"}, ...]}`, plus
`"answer": str` and `"metadata": dict` (the row's other fields, its source
file and line). Numeric answers are turned into strings; anything else that
is not what the schema says raises `DatasetError` (a `ValueError`, printed by
the CLI as one line) naming the file and line (JSONL, 1-based) or row
(Parquet, 0-based): a missing field, malformed JSON, bytes that are not UTF-8,
an unreadable Parquet file, a file with no rows. Blank lines are skipped. A
bad file is never partly used: the error names its first bad line (or row)
and says how many are bad in all.

Built-in task (`builtin:arithmetic`). Questions look like `07+48=` with both
operands zero-padded to the width of `max_operand`, so every prompt has the
same length; the answer is the sum's digits and the expected completion is
those digits followed by eos. The task depends only on `ArithmeticConfig`
(its own seed, never `run.seed`), so the held-out split is the same in every
run. The eval split is `num_eval` distinct operand pairs; the train split is
`num_train` pairs drawn (with replacement when the pair space is smaller than
`num_train`) from the pairs NOT in the eval split, so the two are disjoint.
Python's `random.Random` is used because its streams are stable across
Python versions, which keeps the task (and the cached tiny model's hash)
meaningful.

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

import json
import os
import random
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from rlvr.config import BUILTIN_ARITHMETIC, ArithmeticConfig, DataConfig


@dataclass
class Prompt:
    """One rendered prompt: text, its token ids, the reference answer, extra fields."""

    text: str
    token_ids: list[int]
    answer: str
    metadata: dict = field(default_factory=dict)


# --- built-in arithmetic task -------------------------------------------------------------

def arithmetic_question(a: int, b: int, width: int) -> str:
    return f"{a:0{width}d}+{b:0{width}d}="


def arithmetic_pairs(cfg: ArithmeticConfig) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(train, eval) operand pairs, deterministic from `cfg.seed`, disjoint."""
    lo, hi = cfg.min_operand, cfg.max_operand
    side = hi - lo + 1
    space = side * side
    if cfg.num_eval >= space:
        raise ValueError(f"data.arithmetic: num_eval={cfg.num_eval} leaves no pairs for training "
                         f"(only {space} distinct operand pairs)")
    rng = random.Random(cfg.seed)
    eval_codes = rng.sample(range(space), cfg.num_eval)
    taken = set(eval_codes)
    train_codes: list[int] = []
    if cfg.num_train <= (space - len(taken)) // 2:  # sparse: rejection sampling, no repeats
        seen = set(taken)
        while len(train_codes) < cfg.num_train:
            c = rng.randrange(space)
            if c not in seen:
                seen.add(c)
                train_codes.append(c)
    else:  # dense: shuffle the remaining pairs, repeating them if more rows are asked for
        pool = [c for c in range(space) if c not in taken]
        while len(train_codes) < cfg.num_train:
            rng.shuffle(pool)
            train_codes += pool[:cfg.num_train - len(train_codes)]

    def decode(codes: list[int]) -> list[tuple[int, int]]:
        return [(lo + c // side, lo + c % side) for c in codes]

    return decode(train_codes), decode(eval_codes)


def arithmetic_rows(cfg: ArithmeticConfig, split: str) -> list[dict]:
    """Rows of the built-in task; `split` is "train" or "eval"."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    train, held_out = arithmetic_pairs(cfg)
    width = len(str(cfg.max_operand))
    pairs = train if split == "train" else held_out
    return [{"prompt": arithmetic_question(a, b, width), "answer": str(a + b),
             "metadata": {"source": f"{BUILTIN_ARITHMETIC}:{split}", "index": i, "a": a, "b": b}}
            for i, (a, b) in enumerate(pairs)]


# --- user files ---------------------------------------------------------------------------

class DatasetError(ValueError):
    """A bad dataset file, naming the file and, where there is one, the line or row at fault.

    >>> str(DatasetError("train.jsonl", "not valid JSON", line=3))
    'train.jsonl:3: not valid JSON'
    >>> str(DatasetError("train.parquet", "'answer' is null", row=0))
    "train.parquet row 0: 'answer' is null"
    """

    def __init__(self, path: str, message: str, line: int | None = None, row: int | None = None):
        where = f"{path}:{line}" if line is not None else f"{path} row {row}" if row is not None else path
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.row, self.message = path, line, row, message

    def __reduce__(self):  # picklable despite the keyword arguments
        return type(self), (self.path, self.message, self.line, self.row)


class _BadRow(Exception):
    """A row that does not fit the schema; the reader adds the file and line."""


def _normalise_row(raw: Any, data_cfg: DataConfig, source: str) -> dict:
    """Check one raw row and return it in the common row shape; `source` goes to its metadata."""
    if not isinstance(raw, dict):
        raise _BadRow(f"expected an object, got {type(raw).__name__}")
    pk, mk, ak = data_cfg.prompt_key, data_cfg.messages_key, data_cfg.answer_key
    row: dict = {}
    if raw.get(mk) is not None:
        messages = raw[mk]
        if not isinstance(messages, (list, tuple)) or not messages:
            raise _BadRow(f"{mk!r} must be a non-empty list of {{role, content}} objects")
        for m in messages:
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise _BadRow(f"every item of {mk!r} needs string 'role' and 'content', got {m!r}")
        row["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages]
    elif raw.get(pk) is not None:
        if not isinstance(raw[pk], str):
            raise _BadRow(f"{pk!r} must be a string, got {type(raw[pk]).__name__}")
        row["prompt"] = raw[pk]
    else:
        raise _BadRow(f"needs a {pk!r} string or a {mk!r} list (fields found: {sorted(raw)}; "
                      f"data.prompt_key / data.messages_key name them)")
    if ak not in raw:
        raise _BadRow(f"missing field {ak!r} (fields found: {sorted(raw)}; data.answer_key names it)")
    answer = raw[ak]
    if answer is None:
        raise _BadRow(f"{ak!r} is null")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise _BadRow(f"{ak!r} must be a string or a number, got {answer!r}")
    row["answer"] = str(answer)
    extra = {k: v for k, v in raw.items() if k not in (pk, mk, ak)}
    row["metadata"] = {**extra, "source": source}
    return row


def _parse_jsonl_line(raw: bytes, lineno: int, path: str, data_cfg: DataConfig) -> dict | str | None:
    """One line of a JSONL file: its row, a description of what is wrong with it, or None if blank."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line)"
    text = text.rstrip("\r\n")
    if lineno == 1:
        text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark
    if not text.strip():
        return None
    hint = " (the file must hold one JSON object per line, not an array)" if text.lstrip()[:1] == "[" else ""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg} at column {e.colno}){hint}"
    try:
        return _normalise_row(obj, data_cfg, f"{path}:{lineno}")
    except _BadRow as e:
        return f"{e}{hint}"


def _first_bad(path: str, results: Iterable[tuple[int, dict | str]], unit: str) -> list[dict]:
    """The rows, or a DatasetError for the first bad one (with how many are bad in all).

    Fail-fast in effect (nothing trains on a partly broken file), but the file is read to
    the end so the message says whether it is one typo or a file of another shape.
    """
    rows, first, bad, total = [], None, 0, 0
    for where, result in results:
        total += 1
        if isinstance(result, dict):
            rows.append(result)
            continue
        bad += 1
        first = first or (where, result)
    if first is None:
        return rows
    where, problem = first
    if bad > 1:
        problem += f" [{bad} of {total} {unit}s are bad; the first is shown]"
    raise DatasetError(path, problem, **{unit: where})


def _read_jsonl(path: str, data_cfg: DataConfig) -> list[dict]:
    def results():
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                result = _parse_jsonl_line(raw, lineno, path, data_cfg)
                if result is not None:
                    yield lineno, result

    return _first_bad(path, results(), "line")


def normalise_rows(source: str, raws: list, data_cfg: DataConfig) -> list[dict]:
    """Rows from any other reader (a `datasets` Dataset's records), checked like a file's
    (errors name the source and row)."""
    def results():
        for i, raw in enumerate(raws):
            try:
                yield i, _normalise_row(raw, data_cfg, f"{source} row {i}")
            except _BadRow as e:
                yield i, str(e)

    rows = _first_bad(source, results(), "row")
    if not rows:
        raise DatasetError(source, "no rows")
    return rows


def _read_parquet(path: str, data_cfg: DataConfig) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DatasetError(path, f"not a readable Parquet file ({_first_line(str(e))})") from None

    def results():
        for i, raw in enumerate(table.to_pylist()):
            try:
                yield i, _normalise_row(raw, data_cfg, f"{path} row {i}")
            except _BadRow as e:
                yield i, str(e)

    return _first_bad(path, results(), "row")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def load_rows(path: str, data_cfg: DataConfig) -> list[dict]:
    """Rows of a .jsonl/.json (one object per line) or .parquet file, checked and normalised.

    Every problem is a `DatasetError` naming the file (and the line or row).
    """
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        raise DatasetError(path, "is a folder, expected a .jsonl or .parquet file")
    if not path.endswith((".parquet", ".jsonl", ".json")):
        raise DatasetError(path, "expected a .jsonl, .json (JSON Lines) or .parquet file")
    if not os.path.isfile(path):
        raise DatasetError(path, "no such file")
    try:
        rows = _read_parquet(path, data_cfg) if path.endswith(".parquet") else _read_jsonl(path, data_cfg)
    except OSError as e:  # unreadable (permissions, I/O)
        raise DatasetError(path, f"cannot read the file ({e.strerror or e})") from None
    if not rows:
        raise DatasetError(path, "no rows (the file is empty or has only blank lines)")
    return rows


# --- rendering ----------------------------------------------------------------------------

def _chat_messages(row: dict, system_prompt: str | None) -> list[dict]:
    messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
    if system_prompt:
        messages = [{"role": "system", "content": system_prompt}] + list(messages)
    return messages


def render_prompts(rows: Iterable[dict], tokenizer, data_cfg: DataConfig) -> list[Prompt]:
    """Turn rows into `Prompt`s: chat template (with generation prompt) or the raw string."""
    use_template = data_cfg.apply_chat_template
    if use_template and not has_chat_template(tokenizer):
        raise ValueError("data.apply_chat_template is true but the tokenizer has no chat template "
                         "(set data.apply_chat_template: false for a base model)")
    prompts = []
    for row in rows:
        messages = _chat_messages(row, data_cfg.system_prompt)
        if use_template:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                 **template_kwargs(data_cfg))
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            text = row["prompt"] if "prompt" in row and not data_cfg.system_prompt else \
                "\n\n".join(m["content"] for m in messages)
            ids = tokenizer(text)["input_ids"]
        prompts.append(Prompt(text=text, token_ids=list(ids), answer=row["answer"],
                              metadata=dict(row.get("metadata", {}))))
    return prompts


def template_kwargs(data_cfg: DataConfig) -> dict:
    """Extra chat-template variables: `data.chat_template_kwargs`, plus `enable_thinking` when set
    (Qwen3's template reads it; a template that does not simply ignores it).

    >>> template_kwargs(DataConfig(enable_thinking=False, chat_template_kwargs={"x": 1}))
    {'x': 1, 'enable_thinking': False}
    """
    out = dict(data_cfg.chat_template_kwargs)
    if data_cfg.enable_thinking is not None:
        out["enable_thinking"] = data_cfg.enable_thinking
    return out


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def load_train_and_eval(data_cfg: DataConfig, tokenizer) -> tuple[list[Prompt], list[Prompt]]:
    """Rendered (train, eval) prompts; eval is empty when `data.eval_path` is None.

    A tokenizer without a chat template (a base model) falls back to the raw prompt
    format, with one warning, instead of failing when `data.apply_chat_template` is true.
    """
    if data_cfg.apply_chat_template and not has_chat_template(tokenizer):
        print("[rlvr] warning: the tokenizer has no chat template, so prompts use the raw prompt format "
              "(set data.apply_chat_template: false to say so and silence this warning)", file=sys.stderr, flush=True)
        data_cfg = replace(data_cfg, apply_chat_template=False)
    from rlvr.datamix import train_and_eval_rows  # sources, mixing, held-out split

    train_rows, eval_rows = train_and_eval_rows(data_cfg)
    train = render_prompts(train_rows, tokenizer, data_cfg)
    return train, render_prompts(eval_rows, tokenizer, data_cfg) if eval_rows is not None else []


def drop_too_long(prompts: list[Prompt], max_new_tokens: int, max_model_len: int, source: str,
                  tokens_key: str = "rollout.max_tokens") -> tuple[list[Prompt], int]:
    """The prompts whose tokens plus `max_new_tokens` fit in `max_model_len`, and how many did not.

    `max_model_len` is the model's (its config's `max_position_embeddings`, or the engine's
    `max_model_len` if smaller); `source` (the dataset path) and `tokens_key` (the recipe key
    that set `max_new_tokens`) name the culprits when no prompt fits, which is a `DatasetError`.

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
                                   f"{max_model_len}: {room}; lower {tokens_key} or shorten the prompts")
    return kept, len(prompts) - len(kept)


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
