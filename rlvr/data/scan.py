"""What `rlvr validate` reads of the data: every source of the recipe (the train file or mixture,
the eval file, each eval set), streamed through the loader's own checks (`rlvr.data.rows`),
so a file that would fail `rlvr train` fails validation, with its first few bad lines.

A file is scanned up to `max_bytes` (`rlvr validate --scan-mb`, 64 MiB by default: a few
seconds); a larger one is scanned that far and the report says where it stopped (the rest is
checked when the run starts). Built-in tasks need no reading; hub datasets (`hf:name`) are not
downloaded by validation; a local `datasets` folder is loaded whole (as training does).
Rows over `data.max_row_bytes` are counted as dropped, as training drops them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from rlvr.config.data import BUILTIN_SOURCES, is_dataset_folder, split_count
from rlvr.data.rows import DatasetError, Dropped, TooLong, file_problem, file_results

SCAN_BYTES = 64 << 20
MAX_SHOWN = 5  # bad lines listed per source


@dataclass
class SourceScan:
    """What scanning one source found."""

    key: str  # the recipe key naming it: data.train_path, data.train_mix[1], eval.sets[0].path
    path: str
    unit: str = "line"
    rows: int = 0
    bad: int = 0
    errors: list[str] = field(default_factory=list)  # the first MAX_SHOWN, "file:line: why"
    dropped: Dropped = field(default_factory=Dropped)
    stopped_at: int | None = None  # bytes read when the scan stopped before the end of the file
    note: str = ""  # a source not read here, and why

    def summary(self) -> str:
        """One line for a source without errors."""
        if self.note:
            return f"{self.key}: {self.path}: {self.note}"
        text = f"{self.key}: {self.path}: {self.rows} rows"
        if self.dropped.count:
            text += (f", {self.dropped.count} dropped as longer than data.max_row_bytes "
                     f"(the first at {self.unit} {self.dropped.first})")
        if self.stopped_at is not None:
            text += (f"; scan stopped after the first {self.stopped_at / 2**20:.0f} MiB of "
                     f"{os.path.getsize(self.path) / 2**20:.0f} MiB (the rest is checked when the run starts)")
        return text

    def problems(self) -> list[str]:
        """The error lines (empty when the source is fine)."""
        lines = list(self.errors)
        if self.bad > len(self.errors):
            seen = self.rows + self.bad + self.dropped.count
            lines.append(f"{self.path}: {self.bad} of {seen} {self.unit}s scanned are bad "
                         f"(the first {len(self.errors)} are shown)")
        if not lines and not self.rows and not self.note and self.stopped_at is None:
            lines.append(str(DatasetError(self.path, "no rows" + (
                f" (all {self.dropped.count} are longer than data.max_row_bytes)" if self.dropped.count else
                " (the file is empty or has only blank lines)"))))
        return lines


def data_sources(cfg) -> list[tuple[str, str]]:
    """(recipe key, source) of every source the recipe reads (train, eval, eval sets)."""
    data = cfg.data
    if data.train_mix:
        out = [(f"data.train_mix[{i}]", item.path) for i, item in enumerate(data.mix_items())]
    else:
        out = [("data.train_path", data.train_path)]
    if data.eval_fraction == 0 and data.eval_path is not None:
        out.append(("data.eval_path", data.eval_path))
    out += [(f"eval.sets[{i}].path", s.path) for i, s in enumerate(cfg.eval.set_items())]
    return out


def scan_source(key: str, spec: str, data_cfg, max_bytes: int = SCAN_BYTES) -> SourceScan:
    """Scan one source string (see `rlvr.data.sources`); the `#N` suffix is ignored."""
    path = split_count(spec)[0]
    scan = SourceScan(key, path)
    local = os.path.expanduser(path)
    if path in BUILTIN_SOURCES:
        scan.note = "built-in task"
    elif path.startswith("hf:") and not is_dataset_folder(os.path.expanduser(path[3:].split(":")[0])):
        scan.note = "hub dataset, not downloaded by validation (read when the run starts)"
    elif is_dataset_folder(local) or path.startswith("hf:"):
        _scan_dataset_folder(scan, data_cfg)
    elif file_problem(local):
        scan.errors.append(str(DatasetError(path, file_problem(local))))
    else:
        _scan_file(scan, local, data_cfg, max_bytes)
    return scan


def _scan_file(scan: SourceScan, path: str, data_cfg, max_bytes: int) -> None:
    results, scan.unit = file_results(path, data_cfg)
    try:
        for where, result, read in results:
            _count(scan, where, result)
            if read >= max_bytes:
                scan.stopped_at = read if _more_to_read(results) else None
                break
    except DatasetError as e:  # an unreadable Parquet file
        scan.errors.append(str(e))
    except OSError as e:
        scan.errors.append(str(DatasetError(path, f"cannot read the file ({e.strerror or e})")))
    finally:
        results.close()


def _more_to_read(results) -> bool:
    try:
        next(results)
    except StopIteration:
        return False
    return True


def _count(scan: SourceScan, where: int, result) -> None:
    if isinstance(result, dict):
        scan.rows += 1
    elif isinstance(result, TooLong):
        scan.dropped.count += 1
        scan.dropped.first = where if scan.dropped.first is None else scan.dropped.first
    else:
        scan.bad += 1
        if len(scan.errors) < MAX_SHOWN:
            scan.errors.append(str(DatasetError(scan.path, result, **{scan.unit: where})))


def _scan_dataset_folder(scan: SourceScan, data_cfg) -> None:
    from rlvr.data.sources import source_rows

    scan.unit = "row"
    try:
        scan.rows = len(source_rows(scan.path, data_cfg))
    except DatasetError as e:
        scan.errors.append(str(e))


def scan_data(cfg, max_bytes: int = SCAN_BYTES) -> list[SourceScan]:
    """Scan every source of the recipe (`data_sources`), each once."""
    scans, seen = [], {}
    for key, spec in data_sources(cfg):
        path = split_count(spec)[0]
        if path not in seen:
            seen[path] = scan_source(key, spec, cfg.data, max_bytes)
            scans.append(seen[path])
    return scans
