"""The `data` section: where prompts come from (a file, a `datasets` folder or hub name, the
built-in task, or a mixture of sources), how they are rendered, and how many per step.

A source is a string (`rlvr.data.sources` reads it): `builtin:arithmetic`, a `.jsonl` /
`.parquet` file, a `datasets` `save_to_disk` folder or `hf:name[:config][:split]`, with
an optional `#N` suffix (at most N rows). The checks here look at paths only; the rows are
read by `rlvr validate` (`rlvr.data.scan`) and when the run starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from rlvr.config.checks import require

BUILTIN_ARITHMETIC = "builtin:arithmetic"
BUILTIN_TOOL_ARITHMETIC = "builtin:tool-arithmetic"  # products the tiny model needs the `calc` tool for
BUILTIN_SOURCES = (BUILTIN_ARITHMETIC, BUILTIN_TOOL_ARITHMETIC)
MIX_KEYS = ("path", "count", "weight")
DEFAULT_MAX_ROW_BYTES = 1 << 20  # 1 MiB: ~250k tokens, longer than any model's context


@dataclass
class ArithmeticConfig:
    """The built-in synthetic task: `Q: a+b=? A:`, answered with the digits of the sum."""

    min_operand: int = 0
    max_operand: int = 99
    num_train: int = 20000
    num_eval: int = 500
    seed: int = 1234  # fixed so the task (and its held-out split) never depends on run.seed


@dataclass
class ToolArithmeticConfig:
    """The built-in tool task: `a*b=` with a in [min_a, max_a], b in [min_b, max_b]; the answer
    is the product, which a tiny model cannot compute but can get from the `calc` tool."""

    min_a: int = 100
    max_a: int = 999
    min_b: int = 10
    max_b: int = 99
    num_train: int = 20000
    num_eval: int = 500
    seed: int = 4321
    # the warm start's episodes answer without the tool on `direct_fraction` of the problems whose
    # second factor is below `direct_below` (the others always call it): RL has tool use to learn
    direct_below: int = 55
    direct_fraction: float = 0.8


@dataclass
class MixItem:
    """One item of `data.train_mix`: a source with a row count or a weight (or neither: all its rows)."""

    path: str
    count: Optional[int] = None
    weight: Optional[float] = None

    @staticmethod
    def parse(item: Any, key: str) -> "MixItem":
        """From `"path#count"` or `{path, count}` or `{path, weight}`; problems name `key`.

        >>> MixItem.parse("a.jsonl#5", "k"), MixItem.parse({"path": "b.jsonl", "weight": 2}, "k")
        (MixItem(path='a.jsonl', count=5, weight=None), MixItem(path='b.jsonl', count=None, weight=2))
        """
        if isinstance(item, str):
            path, count = split_count(item)
            return MixItem(path, count)
        require(isinstance(item, dict) and "path" in item, key, "expected \"path#count\" or {path, count} or {path, weight}")
        require(set(item) <= set(MIX_KEYS), key, f"unknown keys {sorted(set(item) - set(MIX_KEYS))}")
        require(not ("count" in item and "weight" in item), key, "give count or weight, not both")
        count, weight = item.get("count"), item.get("weight")
        require(count is None or (not isinstance(count, bool) and isinstance(count, int) and count >= 1),
                key + ".count", "must be an integer >= 1")
        require(weight is None or (isinstance(weight, (int, float)) and weight > 0), key + ".weight", "must be > 0")
        path, suffix = split_count(str(item["path"]))
        return MixItem(path, count if count is not None else suffix, weight)


@dataclass
class DataConfig:
    train_path: str = BUILTIN_ARITHMETIC  # builtin:arithmetic, or .jsonl / .parquet
    eval_path: Optional[str] = BUILTIN_ARITHMETIC
    prompt_key: str = "prompt"  # a plain string prompt ...
    messages_key: str = "messages"  # ... or a chat list [{role, content}, ...]
    answer_key: str = "answer"
    system_prompt: Optional[str] = None
    apply_chat_template: bool = True
    # Qwen3-style thinking switch, passed to the chat template (None: the template's default;
    # templates without the variable ignore it); chat_template_kwargs: any other template variables
    enable_thinking: Optional[bool] = None
    chat_template_kwargs: Dict[str, Any] = field(default_factory=dict)
    prompts_per_step: int = 64
    shuffle: bool = True  # shuffle the train prompts each epoch (seeded by run.seed); false: file order
    # several sources mixed (rlvr.data.rows.sources): items "path#count" or {path, count} or {path, weight} (MixItem);
    # when set, replaces train_path
    train_mix: List[Any] = field(default_factory=list)
    mix_size: Optional[int] = None  # rows shared out by weight (default: the sources' total)
    mix_seed: int = 0  # the mixture's sampling and order (the same in every run of the recipe)
    eval_fraction: float = 0.0  # > 0: hold out this fraction of the train rows as the eval set (replaces eval_path)
    # a row (a JSONL line; a Parquet / `datasets` row's prompt, messages and answer) longer than this is
    # dropped unread and counted, with one warning: no single row can blow up the driver's memory
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES
    arithmetic: ArithmeticConfig = field(default_factory=ArithmeticConfig)
    tool_arithmetic: ToolArithmeticConfig = field(default_factory=ToolArithmeticConfig)

    def mix_items(self) -> list[MixItem]:
        return [MixItem.parse(item, f"data.train_mix[{i}]") for i, item in enumerate(self.train_mix)]

    def check(self) -> None:
        require(self.prompts_per_step >= 1, "data.prompts_per_step", "must be >= 1")
        sources = [("data.train_path", self.train_path)] if not self.train_mix else []
        sources += [("data.eval_path", self.eval_path)] if self.eval_fraction == 0 else []
        sources += [(f"data.train_mix[{i}]", item.path) for i, item in enumerate(self.mix_items())]
        for key, spec in sources:
            if spec is not None:
                problem = source_problem(split_count(spec)[0])
                require(problem is None, key, problem or "")
        require(0.0 <= self.eval_fraction < 1.0, "data.eval_fraction", "must be in [0, 1)")
        require(self.mix_size is None or self.mix_size >= 1, "data.mix_size", "must be >= 1")
        require(not isinstance(self.max_row_bytes, bool) and isinstance(self.max_row_bytes, int)
                and self.max_row_bytes >= 1024, "data.max_row_bytes", "must be an integer >= 1024 (bytes)")
        ar = self.arithmetic
        require(0 <= ar.min_operand <= ar.max_operand, "data.arithmetic.max_operand", "must be >= min_operand >= 0")
        require(ar.num_train >= 1, "data.arithmetic.num_train", "must be >= 1")
        pairs = (ar.max_operand - ar.min_operand + 1) ** 2
        require(0 <= ar.num_eval < pairs or BUILTIN_ARITHMETIC not in (self.train_path, self.eval_path),
                "data.arithmetic.num_eval",
                f"must be in [0, {pairs - 1}]: the operands give {pairs} distinct pairs and training needs some")
        ta = self.tool_arithmetic
        require(0 <= ta.min_a <= ta.max_a and 0 <= ta.min_b <= ta.max_b, "data.tool_arithmetic",
                "operand ranges must be min <= max, both >= 0")
        tool_pairs = (ta.max_a - ta.min_a + 1) * (ta.max_b - ta.min_b + 1)
        require(0 <= ta.num_eval < tool_pairs and ta.num_train >= 1, "data.tool_arithmetic.num_eval",
                f"must be in [0, {tool_pairs - 1}] (with num_train >= 1)")
        require(0 <= ta.direct_fraction < 1, "data.tool_arithmetic.direct_fraction", "must be in [0, 1)")
        require(ta.direct_below <= ta.max_b, "data.tool_arithmetic.direct_below",
                "must be <= data.tool_arithmetic.max_b (some problems must always call the tool)")


def split_count(spec: str) -> tuple[str, int | None]:
    """`path#N` -> (path, N); a path without the suffix -> (path, None).

    >>> split_count("a.jsonl#500"), split_count("hf:x/y:train")
    (('a.jsonl', 500), ('hf:x/y:train', None))
    """
    path, sep, count = spec.rpartition("#")
    if sep and count.isdigit():
        return path, int(count)
    return spec, None


def is_dataset_folder(path: str) -> bool:
    """A folder written by `datasets` (`Dataset.save_to_disk` or `DatasetDict.save_to_disk`)."""
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, n))
                                       for n in ("dataset_info.json", "state.json", "dataset_dict.json"))


def source_problem(path: str) -> str | None:
    """Why `path` (without `#N`) cannot be a data source, or None."""
    if path in BUILTIN_SOURCES:
        return None
    if path.startswith("builtin:"):
        return f"unknown built-in dataset {path!r} (have {', '.join(BUILTIN_SOURCES)})"
    if path.startswith("hf:"):
        return None if len(path) > 3 else "hf: needs a dataset name or folder (hf:owner/name[:config][:split])"
    local = os.path.expanduser(path)
    if os.path.isdir(local):
        return None if is_dataset_folder(local) else (
            f"{path} is a folder (expected a .jsonl or .parquet file, or a `datasets` save_to_disk folder)")
    if not os.path.isfile(local):
        return f"{path}: no such file"
    if not path.endswith((".jsonl", ".json", ".parquet")):
        return f"{path}: expected a .jsonl or .parquet file"
    if os.path.getsize(local) == 0:
        return f"{path} is empty"
    return None

