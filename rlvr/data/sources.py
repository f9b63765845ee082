"""Data sources beyond one file: Hugging Face datasets, several sources mixed, a held-out split.

A *source* is a string:

    builtin:arithmetic            the built-in task
    builtin:tool-arithmetic       the built-in tool task (products, for the `calc` tool)
    data/gsm8k.jsonl              a JSONL / Parquet file (rlvr.data.rows.load_rows)
    data/saved_ds                 a folder written by `datasets` `save_to_disk` (a Dataset, or a
                                  DatasetDict whose "train" split is used; `hf:data/saved_ds:test` picks one)
    hf:openai/gsm8k:main:train    `datasets.load_dataset("openai/gsm8k", "main", split="train")`
                                  (hub names need network; the cache is used when offline)
    <any of these>#5000           at most 5000 rows of it (a seeded sample without replacement)

`data.train_mix` lists sources as `{path, count}` or `{path, weight}` items (or plain
strings with the `#count` suffix). Counts take that many rows of a source (a seeded sample;
more than it has repeats rows: upsampling). Weights split `data.mix_size` rows (default: the
sources' total) in proportion, with the same rule. The mixture is shuffled with
`data.mix_seed`, so it is the same in every run of the recipe. `data.eval_fraction` holds out
that fraction of the (mixed) train rows, deterministically, as the eval set; those rows are
never trained on. Rows keep their source in `metadata.source`.
"""

from __future__ import annotations

import os
import random

from rlvr.config import BUILTIN_ARITHMETIC, DataConfig
from rlvr.config.data import is_dataset_folder, split_count
from rlvr.config.data import BUILTIN_TOOL_ARITHMETIC
from rlvr.data.rows import DatasetError, arithmetic_rows, load_rows, normalise_rows, tool_arithmetic_rows


def load_hf_dataset(path: str):
    """The `datasets` split a source names: `hf:name[:config][:split]` (`datasets.load_dataset`)
    or a `save_to_disk` folder (`folder[:split]`); every problem is one DatasetError line."""
    name = path[3:] if path.startswith("hf:") else path
    parts = name.split(":")
    try:
        import datasets
    except ImportError:
        raise DatasetError(path, "needs the `datasets` package (pip install datasets)") from None
    try:
        if is_dataset_folder(os.path.expanduser(parts[0])):
            ds = datasets.load_from_disk(os.path.expanduser(parts[0]))
            if isinstance(ds, datasets.DatasetDict):
                split = parts[1] if len(parts) > 1 else "train"
                if split not in ds:
                    raise DatasetError(path, f"no split {split!r} (have {sorted(ds)})")
                ds = ds[split]
        else:
            config = parts[1] if len(parts) > 2 else None
            split = parts[-1] if len(parts) > 1 else "train"
            ds = datasets.load_dataset(parts[0], config, split=split)
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - any loader error becomes one clear line
        first = str(e).splitlines()[0][:300] if str(e) else ""
        raise DatasetError(path, f"cannot load the dataset ({type(e).__name__}: {first})") from None
    return ds


def _hf_rows(path: str, data_cfg: DataConfig) -> list[dict]:
    return normalise_rows(path, list(load_hf_dataset(path)), data_cfg)


def source_rows(spec: str, data_cfg: DataConfig, split: str = "train", seed: int = 0) -> list[dict]:
    """The rows of one source string (see the module doc), `#N` applied."""
    path, count = split_count(spec)
    if path == BUILTIN_ARITHMETIC:
        rows = arithmetic_rows(data_cfg.arithmetic, split)
    elif path == BUILTIN_TOOL_ARITHMETIC:
        rows = tool_arithmetic_rows(data_cfg.tool_arithmetic, split)
    elif path.startswith("hf:") or is_dataset_folder(os.path.expanduser(path)):
        rows = _hf_rows(path, data_cfg)
    else:
        rows = load_rows(path, data_cfg)
    return rows if count is None else take(rows, count, random.Random(f"{seed}:{spec}"))


def take(rows: list[dict], count: int, rng: random.Random) -> list[dict]:
    """`count` rows: a sample without replacement, whole copies first when more are asked."""
    whole, rest = divmod(count, len(rows)) if rows else (0, 0)
    return rows * whole + rng.sample(rows, rest)


def mix_counts(sizes: list[int], counts: list[int | None], weights: list[float | None], total: int | None) -> list[int]:
    """Rows taken from each source: its count, its size, or its weight's share of `total`
    (default: the sum of the sizes). Largest remainders keep the sum exact.

    >>> mix_counts([100, 50], [None, None], [3.0, 1.0], 40)
    [30, 10]
    >>> mix_counts([100, 50], [20, None], [None, None], None)
    [20, 50]
    """
    weighted = [i for i, w in enumerate(weights) if w is not None]
    out = [c if c is not None else s for c, s in zip(counts, sizes)]
    if weighted:
        budget = (total if total is not None else sum(sizes)) - sum(out[i] for i in range(len(out)) if i not in weighted)
        wsum = sum(weights[i] for i in weighted)
        exact = {i: budget * weights[i] / wsum for i in weighted}
        floor = {i: int(v) for i, v in exact.items()}
        extra = budget - sum(floor.values())
        for i in sorted(weighted, key=lambda i: floor[i] - exact[i])[:max(extra, 0)]:
            floor[i] += 1
        for i in weighted:
            out[i] = max(floor[i], 0)
    return out


def train_and_eval_rows(data_cfg: DataConfig) -> tuple[list[dict], list[dict] | None]:
    """(train rows, eval rows or None): `train_mix` or `train_path`, minus the `eval_fraction`
    held out; else `eval_path`."""
    seed = data_cfg.mix_seed
    if data_cfg.train_mix:
        items = data_cfg.mix_items()
        loaded = [source_rows(item.path, data_cfg, "train", seed) for item in items]
        counts = mix_counts([len(r) for r in loaded], [item.count for item in items], [item.weight for item in items],
                            data_cfg.mix_size)
        train = []
        for item, rows, n in zip(items, loaded, counts):
            train += take(rows, n, random.Random(f"{seed}:{item.path}"))
        random.Random(seed).shuffle(train)
    else:
        train = source_rows(data_cfg.train_path, data_cfg, "train", seed)
    if data_cfg.eval_fraction > 0:
        order = list(range(len(train)))
        random.Random(f"{seed}:eval").shuffle(order)
        held = set(order[:max(1, round(len(train) * data_cfg.eval_fraction))])
        if len(held) >= len(train):
            raise DatasetError("data.eval_fraction", f"holds out all {len(train)} train rows")
        return [r for i, r in enumerate(train) if i not in held], [r for i, r in enumerate(train) if i in held]
    if data_cfg.eval_path is None:
        return train, None
    return train, source_rows(data_cfg.eval_path, data_cfg, "eval", seed)
