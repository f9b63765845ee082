"""Rows: the built-in arithmetic task and user JSONL/Parquet files, checked and normalised.

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

Every source (several files, `datasets`, mixtures) goes through `rlvr.data.sources`,
which reads files with `load_rows` here.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Iterable

from rlvr.config import BUILTIN_ARITHMETIC, ArithmeticConfig, DataConfig, ToolArithmeticConfig
from rlvr.config.data import BUILTIN_TOOL_ARITHMETIC

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


def tool_arithmetic_rows(cfg: ToolArithmeticConfig, split: str) -> list[dict]:
    """Rows of the built-in tool task (`a*b=`, the product as the answer): `num_eval` distinct
    pairs held out, `num_train` drawn (with replacement) from the rest; deterministic from `cfg.seed`.

    >>> rows = tool_arithmetic_rows(ToolArithmeticConfig(num_train=3, num_eval=2), "eval")
    >>> len(rows), rows[0]["prompt"].endswith("="), int(rows[0]["answer"]) == rows[0]["metadata"]["a"] * rows[0]["metadata"]["b"]
    (2, True, True)
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    side_b = cfg.max_b - cfg.min_b + 1
    space = (cfg.max_a - cfg.min_a + 1) * side_b
    rng = random.Random(cfg.seed)
    held = rng.sample(range(space), cfg.num_eval)
    if split == "eval":
        codes = held
    else:
        taken, codes = set(held), []
        while len(codes) < cfg.num_train:
            c = rng.randrange(space)
            if c not in taken:
                codes.append(c)
    rows = []
    for i, c in enumerate(codes):
        a, b = cfg.min_a + c // side_b, cfg.min_b + c % side_b
        rows.append({"prompt": f"{a}*{b}=", "answer": str(a * b),
                     "metadata": {"source": f"{BUILTIN_TOOL_ARITHMETIC}:{split}", "index": i, "a": a, "b": b}})
    return rows


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
