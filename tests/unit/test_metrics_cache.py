"""`read_metrics(..., cache=MetricsCache())`: incremental, bounded, and the same rows as a full read."""

from __future__ import annotations

import json
import os

from rlvr.run import metrics
from rlvr.run.metrics import MetricsCache, metrics_thinned_before, read_metrics


def _append(path, *rows, tail: str = "") -> None:
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows) + tail)


def _steps(rows) -> list:
    return [r["step"] for r in rows]


def test_a_poll_reads_only_the_appended_bytes(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    _append(path, *({"step": i, "loss": 0.5} for i in range(1000)))
    cache = MetricsCache()
    assert _steps(read_metrics(str(tmp_path), cache=cache)) == list(range(1000))
    read = []
    real = os.pread
    monkeypatch.setattr(metrics.os, "pread", lambda fd, n, off: read.append(n) or real(fd, n, off))
    _append(path, {"step": 1000, "loss": 0.25})
    assert _steps(read_metrics(str(tmp_path), since=998, cache=cache)) == [999, 1000]
    assert sum(read) < 400  # the new line and the first bytes (replacement check), not the 30 KB file


def test_torn_last_line_is_read_again_once_complete(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _append(path, {"step": 1}, tail='{"step": 2, "lo')
    cache = MetricsCache()
    assert _steps(read_metrics(str(tmp_path), cache=cache)) == [1]
    with open(path, "a") as f:
        f.write('ss": 1}')  # complete JSON, no newline yet: served, as a full read would
    assert _steps(read_metrics(str(tmp_path), cache=cache)) == [1, 2] == _steps(read_metrics(str(tmp_path)))
    with open(path, "a") as f:
        f.write('\n{"step": 3}\n')
    assert _steps(read_metrics(str(tmp_path), cache=cache)) == [1, 2, 3] == _steps(read_metrics(str(tmp_path)))


def test_shrunk_replaced_or_rewritten_files_are_read_from_the_start(tmp_path):
    path = tmp_path / "metrics.jsonl"
    cache = MetricsCache()
    _append(path, {"step": 1}, {"step": 2})
    assert _steps(read_metrics(str(tmp_path), cache=cache)) == [1, 2]
    path.write_text(json.dumps({"step": 1}) + "\n")  # shrank (a rewind)
    assert _steps(read_metrics(str(tmp_path), cache=cache)) == [1]
    (tmp_path / "new").write_text(json.dumps({"step": 9}) + "\n" + json.dumps({"step": 10}) + "\n")
    os.replace(tmp_path / "new", path)  # another inode
    assert _steps(read_metrics(str(tmp_path), cache=cache)) == [9, 10]
    with open(path, "r+") as f:  # same inode, same size, other first bytes
        f.write('{"step": 7}')
    assert _steps(read_metrics(str(tmp_path), cache=cache)) == [7, 10]


def test_rows_kept_are_bounded_and_the_newest_kept_whole(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _append(path, *({"step": i, **({"eval/accuracy": 0.5} if i % 10 == 1 else {})} for i in range(5000)))
    cache = MetricsCache(max_rows=1000)
    rows = read_metrics(str(tmp_path), cache=cache)
    assert len(rows) <= 1000 and _steps(rows)[-500:] == list(range(4500, 5000))
    assert metrics_thinned_before(str(tmp_path), cache) < 4500
    assert sum("eval/accuracy" in r for r in rows) > 60  # of two rows the one with more keys stays
    for i in range(5000, 8000):
        _append(path, {"step": i})
        read_metrics(str(tmp_path), since=i - 1, cache=cache)
    assert len(read_metrics(str(tmp_path), cache=cache)) <= 1000
    assert len(read_metrics(str(tmp_path))) == 8000  # without a cache: every row


def test_junk_is_skipped_and_files_that_are_not_plain_give_no_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"x" * (metrics.MAX_LINE_BYTES + 10) + b'\n{"step": 1}\n\xff\xfe\n[1]\n' + b"[" * 100_000 + b"\n")
    cache = MetricsCache()
    assert _steps(read_metrics(str(tmp_path), cache=cache)) == [1] == _steps(read_metrics(str(tmp_path)))
    path.unlink()
    os.mkfifo(path)
    assert read_metrics(str(tmp_path), cache=cache) == [] == read_metrics(str(tmp_path))
    path.unlink()
    os.symlink("/etc/hostname", path)
    assert read_metrics(str(tmp_path), cache=cache) == []
    assert read_metrics(str(tmp_path / "nope"), cache=cache) == []


def test_an_unterminated_long_line_is_not_reread_every_poll(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n' + b"y" * (3 * metrics.MAX_LINE_BYTES))
    cache = MetricsCache()
    assert _steps(read_metrics(str(tmp_path), cache=cache)) == [1]
    read = []
    real = os.pread
    monkeypatch.setattr(metrics.os, "pread", lambda fd, n, off: read.append(n) or real(fd, n, off))
    with open(path, "a") as f:
        f.write('yy\n{"step": 2}\n')
    assert _steps(read_metrics(str(tmp_path), cache=cache)) == [1, 2] and sum(read) < 1000
