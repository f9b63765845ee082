"""Data sources beyond one file: Hugging Face datasets, several sources mixed, a held-out split.

A *source* is a string:

    builtin:arithmetic            the built-in task
    data/gsm8k.jsonl              a JSONL / Parquet file (rlvr.data.load_rows)
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
    """Why `path` (without `#N`) cannot be a data source, or None; for recipe checks."""
    if path == BUILTIN_ARITHMETIC:
        return None
    if path.startswith("builtin:"):
        return f"unknown built-in dataset {path!r} (have {BUILTIN_ARITHMETIC})"
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


def _hf_rows(path: str, data_cfg: DataConfig) -> list[dict]:
    from rlvr.data import DatasetError, normalise_rows

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
        raise DatasetError(path, f"cannot load the dataset ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
    return normalise_rows(path, list(ds), data_cfg)


def source_rows(spec: str, data_cfg: DataConfig, split: str = "train", seed: int = 0) -> list[dict]:
    """The rows of one source string (see the module doc), `#N` applied."""
    from rlvr import data

    path, count = split_count(spec)
    if path == BUILTIN_ARITHMETIC:
        rows = data.arithmetic_rows(data_cfg.arithmetic, split)
    elif path.startswith("hf:") or is_dataset_folder(os.path.expanduser(path)):
        rows = _hf_rows(path, data_cfg)
    else:
        rows = data.load_rows(path, data_cfg)
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


def _mix_items(data_cfg: DataConfig) -> list[tuple[str, int | None, float | None]]:
    items = []
    for item in data_cfg.train_mix:
        if isinstance(item, str):
            path, count = split_count(item)
            items.append((path, count, None))
        else:
            path, count = split_count(str(item["path"]))
            items.append((path, item.get("count", count), item.get("weight")))
    return items


def train_and_eval_rows(data_cfg: DataConfig) -> tuple[list[dict], list[dict] | None]:
    """(train rows, eval rows or None): `train_mix` or `train_path`, minus the `eval_fraction`
    held out; else `eval_path`."""
    from rlvr import data

    seed = data_cfg.mix_seed
    if data_cfg.train_mix:
        items = _mix_items(data_cfg)
        loaded = [source_rows(path, data_cfg, "train", seed) for path, _, _ in items]
        counts = mix_counts([len(r) for r in loaded], [c for _, c, _ in items], [w for _, _, w in items],
                            data_cfg.mix_size)
        train = []
        for (path, _, _), rows, n in zip(items, loaded, counts):
            train += take(rows, n, random.Random(f"{seed}:{path}"))
        random.Random(seed).shuffle(train)
    else:
        train = source_rows(data_cfg.train_path, data_cfg, "train", seed)
    if data_cfg.eval_fraction > 0:
        order = list(range(len(train)))
        random.Random(f"{seed}:eval").shuffle(order)
        held = set(order[:max(1, round(len(train) * data_cfg.eval_fraction))])
        if len(held) >= len(train):
            raise data.DatasetError("data.eval_fraction", f"holds out all {len(train)} train rows")
        return [r for i, r in enumerate(train) if i not in held], [r for i, r in enumerate(train) if i in held]
    if data_cfg.eval_path is None:
        return train, None
    return train, source_rows(data_cfg.eval_path, data_cfg, "eval", seed)


def check_sources(d: DataConfig, require) -> None:
    """Recipe checks of the data sources (`require(ok, key, message)` raises the RecipeError)."""
    sources = [("data.train_path", d.train_path)] if not d.train_mix else []
    sources += [("data.eval_path", d.eval_path)] if d.eval_fraction == 0 else []
    for i, item in enumerate(d.train_mix):
        key = f"data.train_mix[{i}]"
        require(isinstance(item, str) or (isinstance(item, dict) and "path" in item), key,
                 "expected \"path#count\" or {path, count} or {path, weight}")
        if isinstance(item, dict):
            require(set(item) <= {"path", "count", "weight"}, key, f"unknown keys {sorted(set(item) - {'path', 'count', 'weight'})}")
            require(not ("count" in item and "weight" in item), key, "give count or weight, not both")
            require(not isinstance(item.get("count", 1), bool) and isinstance(item.get("count", 1), int)
                     and item.get("count", 1) >= 1, key + ".count", "must be an integer >= 1")
            require(isinstance(item.get("weight", 1.0), (int, float)) and item.get("weight", 1.0) > 0,
                     key + ".weight", "must be > 0")
        sources.append((key, item if isinstance(item, str) else str(item["path"])))
    for key, spec in sources:
        if spec is None:
            continue
        path, _ = split_count(spec)
        problem = source_problem(path)
        require(problem is None, key, problem or "")
    require(0.0 <= d.eval_fraction < 1.0, "data.eval_fraction", "must be in [0, 1)")
    require(d.mix_size is None or d.mix_size >= 1, "data.mix_size", "must be >= 1")
