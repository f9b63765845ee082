"""Rows: the built-in arithmetic task and user JSONL/Parquet files, checked and normalised.

Rows. Every source is normalised to one row shape before rendering:
`{"prompt": str}` or `{"messages": [{"role", "content"}, ...]}`, plus
`"answer": str` and `"metadata": dict` (the row's other fields, its source
file and line). Numeric answers are turned into strings; anything else that
is not what the schema says raises `DatasetError` (a `ValueError`, printed by
the CLI as one line) naming the file and line (JSONL, 1-based) or row
(Parquet, 0-based): a missing field, malformed JSON, bytes that are not UTF-8,
an unreadable Parquet file, a file with no rows, and JSON that parses in no
usable way (an integer over Python's 4300-digit limit, nesting too deep for the
parser, a lone surrogate escape such as `\\ud800` that no tokenizer can encode).
Blank lines are skipped. A bad file is never partly used: the error names its
first bad line (or row) and says how many are bad in all.

Row size. A row longer than `data.max_row_bytes` (1 MiB by default) is dropped and
counted, with one warning line per file: a JSONL line is skipped unread while the file
is streamed (`rlvr.data.lines`), so one 50 MB line costs 1 MiB of memory, not the
~20 GB its tokenization would; a Parquet / `datasets` row is measured by its prompt,
message contents and answer (characters) before it is rendered. A file all of whose
rows are too long is an error. Parquet files are read a batch of rows at a time.

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
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from rlvr.config import BUILTIN_ARITHMETIC, ArithmeticConfig, DataConfig, ToolArithmeticConfig
from rlvr.config.data import BUILTIN_TOOL_ARITHMETIC
from rlvr.data.lines import bounded_lines

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


class TooLong:
    """A row over `data.max_row_bytes`: dropped (JSONL: unread) and counted, never an error."""

    __slots__ = ("size",)

    def __init__(self, size: int):
        self.size = size


@dataclass
class Dropped:
    """Rows dropped as too long: how many, and the line (or row) of the first."""

    count: int = 0
    first: int | None = None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # \ud800-\udfff: half of a pair, or a lone one
_SURROGATE = re.compile("[\ud800-\udfff]")


def _short(value: Any, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters (a row's value in a one-line message)."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


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
                raise _BadRow(f"every item of {mk!r} needs string 'role' and 'content', got {_short(m)}")
        row["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages]
    elif raw.get(pk) is not None:
        if not isinstance(raw[pk], str):
            raise _BadRow(f"{pk!r} must be a string, got {type(raw[pk]).__name__}")
        row["prompt"] = raw[pk]
    else:
        raise _BadRow(f"needs a {pk!r} string or a {mk!r} list (fields found: {_short(sorted(raw), 300)}; "
                      f"data.prompt_key / data.messages_key name them)")
    if ak not in raw:
        raise _BadRow(f"missing field {ak!r} (fields found: {_short(sorted(raw), 300)}; data.answer_key names it)")
    answer = raw[ak]
    if answer is None:
        raise _BadRow(f"{ak!r} is null")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise _BadRow(f"{ak!r} must be a string or a number, got {_short(answer)}")
    row["answer"] = str(answer)
    extra = {k: v for k, v in raw.items() if k not in (pk, mk, ak)}
    row["metadata"] = {**extra, "source": source}
    return row


def _has_lone_surrogate(obj: Any) -> bool:
    """Does any string (key or value) in the parsed JSON hold a surrogate code point? (A valid
    escaped pair is joined into one character by the parser, so any left is a lone half.)"""
    stack = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return True
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _json_object(raw: bytes, text: str) -> tuple[Any, str | None]:
    """(the parsed line, None) or (None, why it cannot be used): malformed JSON, a number
    Python will not convert (over 4300 digits), nesting too deep to parse, a lone surrogate."""
    hint = " (the file must hold one JSON object per line, not an array)" if text.lstrip()[:1] == "[" else ""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at column {e.colno}){hint}"
    except ValueError as e:  # int() over sys.get_int_max_str_digits() digits
        return None, f"not usable JSON ({_first_line(str(e)).split(';')[0][:200]})"
    except RecursionError:
        return None, "not usable JSON (nested too deeply to parse)"
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(obj):
        return None, "not usable JSON (a string holds a lone surrogate escape such as \\ud800: not valid Unicode text)"
    return obj, hint


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
    obj, problem = _json_object(raw, text)
    if obj is None:
        return problem
    try:
        return _normalise_row(obj, data_cfg, f"{path}:{lineno}")
    except _BadRow as e:
        return f"{e}{problem}"


def jsonl_results(path: str, data_cfg: DataConfig) -> Iterator[tuple[int, dict | str | TooLong, int]]:
    """(line number, its row / what is wrong with it / TooLong, bytes of the file read so far)
    for each non-blank line. A line over `data.max_row_bytes` is skipped unread (`bounded_lines`)."""
    read = 0
    with open(path, "rb") as f:
        for lineno, raw, size in bounded_lines(f, data_cfg.max_row_bytes):
            read += size
            result = TooLong(size) if raw is None else _parse_jsonl_line(raw, lineno, path, data_cfg)
            if result is not None:
                yield lineno, result, read


def _first_bad(path: str, results: Iterable[tuple[int, dict | str | TooLong]], unit: str) -> tuple[list[dict], Dropped]:
    """The rows and the ones dropped as too long, or a DatasetError for the first bad one (with
    how many are bad in all).

    Fail-fast in effect (nothing trains on a partly broken file), but the file is read to
    the end so the message says whether it is one typo or a file of another shape.
    """
    rows, first, bad, total, dropped = [], None, 0, 0, Dropped()
    for where, result in results:
        total += 1
        if isinstance(result, dict):
            rows.append(result)
        elif isinstance(result, TooLong):
            dropped.count += 1
            dropped.first = where if dropped.first is None else dropped.first
        else:
            bad += 1
            first = first or (where, result)
    if first is None:
        return rows, dropped
    where, problem = first
    if bad > 1:
        problem += f" [{bad} of {total} {unit}s are bad; the first is shown]"
    raise DatasetError(path, problem, **{unit: where})


def _record_size(raw: Any, data_cfg: DataConfig) -> int:
    """The characters of a record's prompt, message contents and answer (how a Parquet or
    `datasets` row is held to `data.max_row_bytes`: it is already in memory, but never tokenized)."""
    if not isinstance(raw, dict):
        return 0
    size = sum(len(raw[k]) for k in (data_cfg.prompt_key, data_cfg.answer_key) if isinstance(raw.get(k), str))
    messages = raw.get(data_cfg.messages_key)
    if isinstance(messages, (list, tuple)):
        size += sum(len(m["content"]) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))
    return size


def record_result(raw: Any, data_cfg: DataConfig, source: str) -> dict | str | TooLong:
    """A record of a Parquet file or a `datasets` Dataset: its row, what is wrong with it, or TooLong."""
    size = _record_size(raw, data_cfg)
    if size > data_cfg.max_row_bytes:
        return TooLong(size)
    try:
        return _normalise_row(raw, data_cfg, source)
    except _BadRow as e:
        return str(e)


def warn_dropped(source: str, dropped: Dropped, unit: str, data_cfg: DataConfig) -> None:
    """One warning line for the rows of `source` dropped as too long."""
    if dropped.count:
        where = f"line {dropped.first}" if unit == "line" else f"row {dropped.first}"
        print(f"[rlvr] warning: {source}: dropped {dropped.count} row(s) longer than data.max_row_bytes="
              f"{data_cfg.max_row_bytes} bytes, unread (the first at {where})", file=sys.stderr, flush=True)


def _checked(source: str, rows: list[dict], dropped: Dropped, unit: str, data_cfg: DataConfig) -> list[dict]:
    """`rows`, after the warning about the dropped ones; none at all is an error."""
    if not rows:
        raise DatasetError(source, f"no rows (all {dropped.count} are longer than data.max_row_bytes="
                                   f"{data_cfg.max_row_bytes} bytes)" if dropped.count else
                           "no rows (the file is empty or has only blank lines)")
    warn_dropped(source, dropped, unit, data_cfg)
    return rows


def normalise_rows(source: str, raws: list, data_cfg: DataConfig) -> list[dict]:
    """Rows from any other reader (a `datasets` Dataset's records), checked like a file's
    (errors name the source and row)."""
    results = ((i, record_result(raw, data_cfg, f"{source} row {i}")) for i, raw in enumerate(raws))
    rows, dropped = _first_bad(source, results, "row")
    return _checked(source, rows, dropped, "row", data_cfg)


def parquet_results(path: str, data_cfg: DataConfig) -> Iterator[tuple[int, dict | str | TooLong, int]]:
    """(row number from 0, its row / what is wrong with it / TooLong, bytes of the table read so
    far) for each row of a Parquet file, read a batch at a time."""
    import pyarrow.parquet as pq

    i, read = 0, 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            read += batch.nbytes
            for raw in batch.to_pylist():
                yield i, record_result(raw, data_cfg, f"{path} row {i}"), read
                i += 1
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise DatasetError(path, f"not a readable Parquet file ({_first_line(str(e))[:300]})") from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def file_problem(path: str) -> str | None:
    """Why `path` cannot be read as a data file at all, or None."""
    if os.path.isdir(path):
        return "is a folder, expected a .jsonl or .parquet file"
    if not path.endswith((".parquet", ".jsonl", ".json")):
        return "expected a .jsonl, .json (JSON Lines) or .parquet file"
    if not os.path.isfile(path):
        return "no such file"
    return None


def file_results(path: str, data_cfg: DataConfig) -> tuple[Iterator[tuple[int, dict | str | TooLong, int]], str]:
    """The results of a .jsonl/.json or .parquet file (`jsonl_results` / `parquet_results`) and
    their unit ("line" or "row")."""
    if path.endswith(".parquet"):
        return parquet_results(path, data_cfg), "row"
    return jsonl_results(path, data_cfg), "line"


def load_rows(path: str, data_cfg: DataConfig) -> list[dict]:
    """Rows of a .jsonl/.json (one object per line) or .parquet file, checked and normalised;
    rows over `data.max_row_bytes` are dropped (one warning says how many).

    Every problem is a `DatasetError` naming the file (and the line or row).
    """
    path = os.path.expanduser(path)
    problem = file_problem(path)
    if problem:
        raise DatasetError(path, problem)
    results, unit = file_results(path, data_cfg)
    try:
        rows, dropped = _first_bad(path, ((where, result) for where, result, _ in results), unit)
    except OSError as e:  # unreadable (permissions, I/O)
        raise DatasetError(path, f"cannot read the file ({e.strerror or e})") from None
    return _checked(path, rows, dropped, unit, data_cfg)
