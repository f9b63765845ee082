"""Issue 21 (data, recipes): rows over `data.max_row_bytes` dropped unread (bounded memory), and
`rlvr validate` checking what `rlvr train` would fail on before any actor: the data (every
source, streamed, first bad lines with file:line) and the plugins' options (built once in a
child process), each problem exit code 2 with one line naming the file:line or dotted key."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from rlvr.config import DataConfig
from rlvr.data import rows as data
from rlvr.data.lines import bounded_lines
from rlvr.data.scan import scan_source

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "tiny-cpu.yaml")
OK = b'{"prompt": "1+1=", "answer": "2"}\n'


def _write(path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


# --- rows over the byte cap -----------------------------------------------------------------

def test_a_row_over_the_byte_cap_is_dropped_unread_and_counted(tmp_path, capsys):
    long_line = b'{"prompt": "' + b"1+1=" * 1000 + b'", "answer": "2"}\n'  # 4 kB > 1024
    path = _write(tmp_path / "t.jsonl", OK + long_line + long_line + OK)
    got = data.load_rows(path, DataConfig(max_row_bytes=1024))
    assert [r["metadata"]["source"] for r in got] == [f"{path}:1", f"{path}:4"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"[rlvr] warning: {path}: dropped 2 row(s) longer than data.max_row_bytes=1024 bytes, "
                   "unread (the first at line 2)"]
    with pytest.raises(data.DatasetError, match=r"t2\.jsonl: no rows \(all 2 are longer than data.max_row_bytes"):
        data.load_rows(_write(tmp_path / "t2.jsonl", long_line * 2), DataConfig(max_row_bytes=1024))


def test_a_parquet_row_over_the_byte_cap_is_dropped(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "t.parquet")
    pq.write_table(pa.Table.from_pylist([{"prompt": "1+1=", "answer": "2"}, {"prompt": "x" * 5000, "answer": "1"}]), path)
    got = data.load_rows(path, DataConfig(max_row_bytes=1024))
    assert [r["answer"] for r in got] == ["2"]
    assert "dropped 1 row(s) longer than data.max_row_bytes=1024 bytes, unread (the first at row 1)" in capsys.readouterr().err


def test_the_line_reader_never_asks_for_more_than_the_cap():
    class Recording(io.BytesIO):
        biggest = 0

        def readline(self, size=-1):
            line = super().readline(size)
            Recording.biggest = max(Recording.biggest, len(line))
            assert size != -1  # never an unbounded read
            return line

    f = Recording(OK + b"x" * 5_000_000 + b"\n" + OK)
    out = [(n, line, size) for n, line, size in bounded_lines(f, 1024)]
    assert out == [(1, OK, len(OK)), (2, None, 5_000_001), (3, OK, len(OK))]
    assert Recording.biggest <= 1 << 16  # one skip chunk at most


RSS_CODE = """
import resource, sys
from rlvr.config import DataConfig
from rlvr.data.rows import load_rows
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = load_rows(sys.argv[1], DataConfig())
print(len(rows), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_50_mb_line_costs_no_memory(tmp_path):
    """Today's loader held the line (and its decoded text, and the parsed string: 150 MB+)
    and then tokenized it (~420 bytes a character: ~20 GB); now it is skipped unread."""
    path = tmp_path / "big.jsonl"
    with open(path, "wb") as f:
        f.write(OK + b'{"prompt": "' + b"1+2=" * (50 << 18) + b'", "answer": "3"}\n' + OK)
    proc = subprocess.run([sys.executable, "-c", RSS_CODE, str(path)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr
    kept, grown_mb = (int(x) for x in proc.stdout.split())
    assert kept == 2 and grown_mb < 20, proc.stdout
    assert "dropped 1 row(s) longer than data.max_row_bytes=1048576 bytes" in proc.stderr


def test_a_valid_surrogate_pair_is_kept(tmp_path):
    path = _write(tmp_path / "t.jsonl", b'{"prompt": "smile \\ud83d\\ude00", "answer": "2"}\n')
    assert data.load_rows(path, DataConfig())[0]["prompt"] == "smile \U0001F600"


# --- rlvr validate: the data ------------------------------------------------------------------

BAD_FILES = [  # (id, file content, fragment after "<file>:")
    ("5000-digit integer", OK + b'{"prompt": "a", "answer": ' + b"9" * 5000 + b"}\n",
     "2: not usable JSON (Exceeds the limit (4300 digits)"),
    ("nesting 100k deep", b"[" * 100_000 + b"]" * 100_000 + b"\n", "1: not usable JSON (nested too deeply to parse)"),
    ("lone surrogate", OK + OK + b'{"prompt": "\\ud800", "answer": "1"}\n', "3: not usable JSON (a string holds a lone"),
    ("non-UTF-8 bytes", b'{"prompt": "\xff", "answer": "1"}\n', "1: not UTF-8 text (byte 0xff at byte 13"),
    ("non-object row", OK + b'"just a string"\n', "2: expected an object, got str"),
    ("missing prompt field", b'{"question": "1+1=", "answer": "2"}\n', "1: needs a 'prompt' string or a 'messages' list"),
    ("malformed JSON", OK + b"{oops\n", "2: not valid JSON"),
]


def _validate(argv, capsys) -> tuple[int, list[str]]:
    from rlvr.cli import main as cli

    try:
        code = cli.main(["validate", RECIPE, *argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("content, fragment", [r[1:] for r in BAD_FILES], ids=[r[0] for r in BAD_FILES])
def test_validate_reads_the_data_and_names_file_and_line(tmp_path, capsys, content, fragment):
    path = _write(tmp_path / "bad.jsonl", content)
    code, err = _validate([f"data.train_path={path}"], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"rlvr: data error: {path}:{fragment}"), err[0]


def test_validate_reads_eval_sets_and_lists_the_first_bad_lines(tmp_path, capsys):
    path = _write(tmp_path / "eval.jsonl", OK + b"{\n" * 8)
    code, err = _validate([f"eval.sets=[{{name: x, path: {path}}}]"], capsys)
    assert code == 2 and len(err) == 6, err
    assert err[0].startswith(f"rlvr: data error: {path}:2: not valid JSON") and err[4].startswith(f"rlvr: data error: {path}:6:")
    assert err[5] == f"rlvr: data error: {path}: 8 of 9 lines scanned are bad (the first 5 are shown)"


def test_validate_counts_rows_and_drops_and_stops_on_huge_files(tmp_path, capsys):
    path = _write(tmp_path / "t.jsonl", OK * 3 + b'{"prompt": "' + b"x" * 2_000_000 + b'", "answer": "1"}\n')
    code, err = _validate([f"data.train_path={path}", "data.eval_path=null"], capsys)
    assert code == 0 and err == [f"[rlvr] data.train_path: {path}: 3 rows, 1 dropped as longer than "
                                 "data.max_row_bytes (the first at line 4)"], err
    scan = scan_source("data.train_path", path, DataConfig(), max_bytes=len(OK) * 2)
    assert scan.rows == 2 and scan.stopped_at == len(OK) * 2 and "scan stopped after the first" in scan.summary()


def test_validate_a_file_of_blank_lines_has_no_rows(tmp_path, capsys):
    path = _write(tmp_path / "t.jsonl", b"\n\n")
    code, err = _validate([f"data.eval_path={path}"], capsys)
    assert code == 2 and err == [f"rlvr: data error: {path}: no rows (the file is empty or has only blank lines)"]


# --- rlvr validate: the plugins' options ----------------------------------------------------------

OPTION_ROWS = [  # (id, override, the one line's start after "rlvr: recipe error: ")
    ("typo", "reward.verifiers=[{name: math, rel_tl: 1e-6}]",
     "reward.verifiers[0].rel_tl: verifier 'math' has no option 'rel_tl' (it takes: correct_score,"),
    ("unknown option with a value", "reward.verifiers=[{name: format}, {name: math, rel_tol: lots}]",
     "reward.verifiers[1].rel_tol: verifier 'math' has no option 'rel_tol'"),
    ("wrong type", "reward.verifiers=[{name: math, correct_score: lots}]",
     "reward.verifiers[0].correct_score: verifier 'math': TypeError: math verifier: option correct_score must be "
     "a number, got 'lots'"),
    ("close name suggested", "reward.verifiers=[{name: math, fast_pth: false}]",
     "reward.verifiers[0].fast_pth: verifier 'math' has no option 'fast_pth' (it takes: correct_score, wrong_score, "
     "parsing_timeout, verify_timeout, fast_path; did you mean 'fast_path'?)"),
    ("eval set verifier", "eval.sets=[{name: x, path: 'builtin:arithmetic', verifiers: [{name: format, pattern: '['}]}]",
     "eval.sets[0].verifiers[0].pattern: verifier 'format': "),
    ("module path typo", "reward.verifiers=[{name: 'no_such_pkg.checks:exact'}]",
     "reward.verifiers[0].name: cannot import verifier 'no_such_pkg.checks:exact': ModuleNotFoundError"),
]


@pytest.mark.parametrize("override, start", [r[1:] for r in OPTION_ROWS], ids=[r[0] for r in OPTION_ROWS])
def test_validate_builds_the_verifiers_and_names_the_option(capsys, override, start):
    code, err = _validate([override], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("rlvr: recipe error: " + start), err[0]


def test_the_installed_commands_exit_2_with_one_line(tmp_path):
    """`rlvr validate` on bad data and `rlvr train` with a bad verifier option, as subprocesses:
    exit code 2, one line, nothing started (today's train died after ~47 s with a 60-line
    ActorDiedError traceback)."""
    bad = _write(tmp_path / "bad.jsonl", OK + b'{"prompt": "a", "answer": ' + b"1" * 5000 + b"}\n")
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("RAY_ADDRESS", None)
    runs = [["validate", RECIPE, f"data.train_path={bad}"],
            ["train", RECIPE, "reward.verifiers=[{name: math, rel_tl: 1}]", f"run.output_dir={tmp_path}/runs",
             "run.name=bad-option"]]
    procs = [subprocess.Popen([sys.executable, "-m", "rlvr.cli.main", *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, env=env) for argv in runs]
    for proc, needle in zip(procs, [f"rlvr: data error: {bad}:2: not usable JSON",
                                    "rlvr: recipe error: reward.verifiers[0].rel_tl: verifier 'math' has no option"]):
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2 and len(stderr.strip().splitlines()) == 1 and stderr.startswith(needle), stderr
    assert json.load(open(f"{tmp_path}/runs/bad-option/status.json"))["state"] == "failed"


@pytest.mark.parametrize("module", ["rlvr.data.lines", "rlvr.data.rows", "rlvr.cluster.plugin_check"])
def test_doctests(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
