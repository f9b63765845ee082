"""Reading a dataset's raw records for `rlvr data prepare`, and writing the prepared JSONL.

Inputs (`--from`): a `.jsonl` file (one object per line; streamed), a `.json` file (a list of
objects, an object holding one such list such as `{"data": [...]}`, or JSON Lines), a
`.parquet` file (read a batch at a time), a `datasets` `save_to_disk` folder
(`folder[:split]`, the `train` split of a DatasetDict by default), or `hf:ID[:config][:split]`
through `datasets.load_dataset` (network or its cache; split `train` by default).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator

from rlvr.config.data import is_dataset_folder


class PrepareError(ValueError):
    """An input that cannot be read: one line for the CLI."""


def read_records(spec: str) -> Iterator[Any]:
    """The raw records of an input (see the module doc), in order."""
    local = os.path.expanduser(spec)
    if spec.startswith("hf:") or (not os.path.exists(local) and is_dataset_folder(local.split(":")[0])):
        yield from _datasets_records(spec)
    elif os.path.isdir(local):
        if not is_dataset_folder(local):
            raise PrepareError(f"{spec} is a folder, but not one written by datasets' save_to_disk")
        yield from _datasets_records(spec)
    elif not os.path.isfile(local):
        raise PrepareError(f"{spec}: no such file (or hf:ID for a hub dataset)")
    elif spec.endswith(".parquet"):
        yield from _parquet_records(local)
    elif spec.endswith(".json"):
        yield from _json_records(local)
    elif spec.endswith(".jsonl"):
        yield from _jsonl_records(local)
    else:
        raise PrepareError(f"{spec}: expected a .jsonl, .json or .parquet file, a save_to_disk folder or hf:ID")


def _jsonl_records(path: str) -> Iterator[Any]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as e:
                    raise PrepareError(f"{path}:{lineno}: not valid JSON ({str(e)[:200]})") from None


def _json_records(path: str) -> Iterator[Any]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except ValueError:
        yield from _jsonl_records(path)  # JSON Lines named .json
        return
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise PrepareError(f"{path}: expected a list of objects (or an object holding one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise PrepareError(f"{path}: expected a list of objects")
    yield from data


def _parquet_records(path: str) -> Iterator[Any]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError) as e:
        raise PrepareError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0][:200]})") from None
    for batch in pf.iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def _datasets_records(spec: str) -> Iterator[Any]:
    from rlvr.data.rows import DatasetError
    from rlvr.data.sources import load_hf_dataset

    try:
        ds = load_hf_dataset(spec)  # the loader `data.train_path` uses: one way to read a datasets source
    except DatasetError as e:
        raise PrepareError(str(e)) from None
    yield from ds


def write_jsonl(rows: Iterable[dict], out: str) -> None:
    """Write `rows` as JSON Lines to `out` (through a temporary file: a failed run leaves no half file)."""
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{out}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
