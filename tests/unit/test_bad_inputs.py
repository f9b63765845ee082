"""Bad input, table-driven: every bad recipe, dataset or model gets one clear line, never a traceback.

Recipe-level problems go through the CLI (`rlvr validate`, exit code 2, one line
`rlvr: recipe error: <key>: ...`): its `main` in this process for the whole table, and
the installed `rlvr` command for two rows.
Load-time problems (bad lines, prompts too long for the model) call the `rlvr.data.rows`
loaders directly with the tiny model's real tokenizer and max length, as the driver does;
they raise `DatasetError`, one line naming the file and line (or row) that the CLI prints as
`rlvr: data error: ...` (`rlvr validate` reading the same files: tests/unit/test_validate_checks.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from rlvr.data import prompts as data_prompts
from rlvr.data import rows as data
from rlvr.config import DataConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "tiny-cpu.yaml")
RLVR = os.path.join(os.path.dirname(sys.executable), "rlvr")
GOOD = b'{"prompt": "1+1=", "answer": "2"}\n'


# --- the corpus ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """Bad (and a few good) recipes, data files and model folders, in one folder."""
    root = tmp_path_factory.mktemp("bad-inputs")
    files = {
        "empty.jsonl": b"",
        "good.jsonl": GOOD,
        "folder.jsonl/keep": b"",
        "broken.yaml": b"rollout:\n  n: [4\n",
        "typo.yaml": b"rollout:\n  n: 4\n  tempreature: 0.5\n",
        "model-no-config/tokenizer.json": b"{}",
        "model-no-tokenizer/config.json": b'{"model_type": "qwen2"}',
        "model-bad-config/config.json": b"{not json",
        "model-bad-config/tokenizer.json": b"{}",
        "model-ok/config.json": b'{"model_type": "qwen2"}',
        "model-ok/tokenizer_config.json": b"{}",
        "model-file": b"weights?",
    }
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return str(root)


# (id, recipe file (None: the default recipe), overrides, fragment of the one stderr line, exit code);
# `{c}` is the corpus folder
CLI_ROWS = [
    ("unknown key", None, ["trainer.nonsense=1"], "trainer.nonsense", 2),
    ("unknown key in the YAML", "{c}/typo.yaml", [], "rollout.tempreature", 2),
    ("wrong type", None, ["trainer.total_steps=abc"], "trainer.total_steps", 2),
    ("out of range", None, ["rollout.top_p=1.5"], "rollout.top_p: must be in (0, 1]", 2),
    ("missing recipe file", "{c}/no-such-recipe.yaml", [], "no-such-recipe.yaml: recipe file not found", 2),
    ("recipe not YAML", "{c}/broken.yaml", [], "broken.yaml: not valid YAML", 2),
    ("missing data file", None, ["data.train_path={c}/gone.jsonl"],
     "data.train_path: {c}/gone.jsonl: no such file", 2),
    ("empty data file", None, ["data.eval_path={c}/empty.jsonl"], "data.eval_path: {c}/empty.jsonl is empty", 2),
    ("data path is a folder", None, ["data.train_path={c}/folder.jsonl"],
     "data.train_path: {c}/folder.jsonl is a folder", 2),
    ("data file of another kind", None, ["data.train_path={c}/broken.yaml"],
     "data.train_path: {c}/broken.yaml: expected a .jsonl", 2),
    ("model folder without config.json", None, ["model.path={c}/model-no-config"],
     "model.path: {c}/model-no-config has no config.json", 2),
    ("model folder without a tokenizer", None, ["model.path={c}/model-no-tokenizer"],
     "model.path: {c}/model-no-tokenizer has no tokenizer files", 2),
    ("model config.json not JSON", None, ["model.path={c}/model-bad-config"],
     "model.path: {c}/model-bad-config/config.json is not a readable JSON object", 2),
    ("model path is a file", None, ["model.path={c}/model-file"], "model.path: {c}/model-file is a file", 2),
    ("fewer CPUs than the recipe asks", None, ["cluster.num_cpus=2"],  # 2 ranks x 1 + 1 engine x 1 + 1 x 0.5 -> 4
     "cluster.num_cpus: the recipe's trainer ranks, engines and reward workers need 4 logical CPUs, got 2", 2),
    ("more eval pairs than the task has", None, ["data.arithmetic.max_operand=3", "data.arithmetic.num_eval=16"],
     "data.arithmetic.num_eval: must be in [0, 15]", 2),  # operands 0..3: 4 x 4 = 16 pairs
    ("compiled blocks under ZeRO-3", None,
     ["trainer.compile=layers", "trainer.backend=deepspeed", "trainer.deepspeed.zero_stage=3"],
     "trainer.compile: is not supported with DeepSpeed ZeRO-3", 2),
    # (braces doubled: the rows go through str.format)
    ("eval set without a path", None, ["eval.sets=[{{name: x}}]"], "eval.sets[0]: needs at least {{name, path}}", 2),
    ("eval set with a bad sample count", None, ["eval.sets=[{{name: x, path: builtin:arithmetic, n: 0}}]"],
     "eval.sets[0].n: must be an integer >= 1", 2),
    ("greedy eval set with several samples", None,
     ["eval.sets=[{{name: x, path: builtin:arithmetic, n: 4, temperature: 0}}]"],
     "eval.sets[0].temperature: must be > 0 when n > 1", 2),
    ("row byte cap too small", None, ["data.max_row_bytes=10"], "data.max_row_bytes: must be an integer >= 1024", 2),
    ("LoRA dropout out of range", None, ["model.lora.rank=8", "model.lora.dropout=1.5"],
     "model.lora.dropout: must be in [0, 1), got 1.5", 2),
    ("compiled blocks with LoRA", None, ["model.lora.rank=8", "trainer.compile=blocks"],
     "trainer.compile: is not supported with LoRA", 2),
    ("good model and data (control)", None,
     ["model.path={c}/model-ok", "data.train_path={c}/good.jsonl", "cluster.num_cpus=4"], "", 0),
]


def _argv(corpus: str, recipe: str | None, overrides: list[str]) -> list[str]:
    return ["validate", (recipe or RECIPE).format(c=corpus)] + [o.format(c=corpus) for o in overrides]


@pytest.mark.parametrize("row_id, recipe, overrides, fragment, code", CLI_ROWS, ids=[r[0] for r in CLI_ROWS])
def test_cli_rejects_bad_recipe_with_one_line(corpus, capsys, monkeypatch, row_id, recipe, overrides, fragment, code):
    """The CLI's own `main` in this process (a subprocess per row costs ~2.5 s: torch is
    imported by the checks); `test_the_installed_command_...` runs the real binary."""
    from rlvr.cli import main as cli

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # cluster.num_cpus only counts for a private cluster
    try:
        returncode = cli.main(_argv(corpus, recipe, overrides))
    except SystemExit as e:
        returncode = e.code
    stderr = capsys.readouterr().err
    assert returncode == code, stderr
    if code == 0:
        return
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("rlvr: recipe error: ") and fragment.format(c=corpus) in lines[0], lines[0]


def test_the_installed_command_exits_2_with_one_line(corpus):
    """`.venv/bin/rlvr validate` itself, for a row rejected at load and one rejected by the checks."""
    cmd = [RLVR] if os.path.exists(RLVR) else [sys.executable, "-m", "rlvr.cli.main"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    rows = [r for r in CLI_ROWS if r[0] in ("missing recipe file", "model folder without config.json")]
    procs = [(fragment, subprocess.Popen(cmd + _argv(corpus, recipe, overrides), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True, cwd=REPO, env=env))
             for _, recipe, overrides, fragment, _ in rows]
    for fragment, proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2 and "Traceback" not in stderr, stderr
        assert stderr.strip() == stderr.strip().splitlines()[0] and fragment.format(c=corpus) in stderr, stderr


# --- datasets at load time -----------------------------------------------------------------

def _parquet_bytes(rows: list[dict]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def _lines(*objs) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objs)


OK = {"prompt": "1+1=", "answer": "2"}

# (id, file name, content, fragment after "<file>"); the message is one line starting with the file
LOAD_ROWS = [
    ("malformed JSON on line 3 of 5", "t.jsonl", _lines(OK, OK, b'{"prompt": "2+2=", answer: 4}', OK, OK),
     ":3: not valid JSON (Expecting property name enclosed in double quotes at column 20)"),
    ("two bad lines are counted", "t.jsonl", _lines(OK, b"{", OK, b"[", OK),
     ":2: not valid JSON (Expecting property name enclosed in double quotes at column 2) "
     "[2 of 5 lines are bad; the first is shown]"),
    ("missing answer field", "t.jsonl", _lines(OK, {"prompt": "3+3=", "solution": "6"}),
     ":2: missing field 'answer' (fields found: ['prompt', 'solution']; data.answer_key names it)"),
    ("missing prompt field", "t.jsonl", _lines({"question": "3+3=", "answer": "6"}),
     ":1: needs a 'prompt' string or a 'messages' list (fields found: ['answer', 'question']"),
    ("non-UTF-8 line", "t.jsonl", _lines(OK, OK, OK, b'{"prompt": "\xff", "answer": "1"}'),
     ":4: not UTF-8 text (byte 0xff at byte 13 of the line)"),
    ("only blank lines", "t.jsonl", b"\n\n   \n", ": no rows (the file is empty or has only blank lines)"),
    ("a JSON array, not JSON Lines", "t.json", b'[{"prompt": "1+1=", "answer": "2"}]\n',
     ":1: expected an object, got list (the file must hold one JSON object per line, not an array)"),
    ("an integer of 5000 digits", "t.jsonl", _lines(OK, b'{"prompt": "1+1=", "answer": ' + b"7" * 5000 + b"}"),
     ":2: not usable JSON (Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits)"),
    ("nesting 100k deep", "t.jsonl", _lines(OK, OK, b"[" * 100_000 + b"]" * 100_000),
     ":3: not usable JSON (nested too deeply to parse)"),
    ("a lone surrogate escape", "t.jsonl", _lines(OK, b'{"prompt": "1+1=\\ud800", "answer": "2"}'),
     ":2: not usable JSON (a string holds a lone surrogate escape such as \\ud800: not valid Unicode text)"),
    ("a lone low surrogate in a key", "t.jsonl", _lines(b'{"prompt": "1+1=", "answer": "2", "x\\uDC00": 1}'),
     ":1: not usable JSON (a string holds a lone surrogate escape"),
    ("a number, not an object", "t.jsonl", _lines(OK, b"42"), ":2: expected an object, got int"),
    ("Parquet without the answer column", "t.parquet", _parquet_bytes([{"prompt": "1+1="}]),
     " row 0: missing field 'answer'"),
    ("not really Parquet", "t.parquet", b"PAR1 but not really", ": not a readable Parquet file"),
]


@pytest.mark.parametrize("row_id, name, content, fragment", LOAD_ROWS, ids=[r[0] for r in LOAD_ROWS])
def test_loader_names_file_and_line(tmp_path, row_id, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(data.DatasetError) as err:
        data.load_rows(str(path), DataConfig())
    message = str(err.value)
    assert message.startswith(str(path) + fragment), message
    assert "\n" not in message  # the CLI prints it as one line: `rlvr: data error: <message>`


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\n" + GOOD + b"\n  \n" + GOOD + b"\n")
    rows = data.load_rows(str(path), DataConfig())
    assert [r["metadata"]["source"] for r in rows] == [f"{path}:2", f"{path}:5"]  # line numbers count blank lines


# --- prompts and the model ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(random_model_dir):
    """The tiny model's tokenizer and max length, read as the driver reads them."""
    from transformers import AutoTokenizer

    with open(os.path.join(random_model_dir, "config.json")) as f:
        max_len = json.load(f)["max_position_embeddings"]
    return AutoTokenizer.from_pretrained(random_model_dir), max_len


def _load_and_fit(path, tokenizer, max_len, max_tokens=16):
    cfg = DataConfig(train_path=str(path), eval_path=None)
    train, _ = data_prompts.load_train_and_eval(cfg, tokenizer)
    return data_prompts.drop_too_long(train, max_tokens, max_len, source=cfg.train_path)


def test_a_prompt_too_long_is_skipped_and_counted(tmp_path, tiny):
    tokenizer, max_len = tiny
    assert max_len == 1024
    long_prompt = "1+1=" * 300  # one token per character: 1,200 tokens > 1024 - 16
    path = tmp_path / "t.jsonl"
    path.write_bytes(_lines(OK, {"prompt": long_prompt, "answer": "2"}, {"prompt": "2+2=", "answer": "4"}))
    kept, skipped = _load_and_fit(path, tokenizer, max_len)
    assert skipped == 1 and [p.answer for p in kept] == ["2", "4"]


def test_all_prompts_too_long_is_an_error(tmp_path, tiny):
    tokenizer, max_len = tiny
    path = tmp_path / "t.jsonl"
    path.write_bytes(_lines({"prompt": "1+1=" * 300, "answer": "2"}, {"prompt": "2+2=" * 260, "answer": "4"}))
    with pytest.raises(data.DatasetError) as err:
        _load_and_fit(path, tokenizer, max_len)
    assert str(err.value).startswith(f"{path}: all 2 prompts are too long for the model's max length 1024: "
                                     f"every prompt is longer than 1008 tokens"), str(err.value)
    with pytest.raises(data.DatasetError, match="rollout.max_tokens=1024 leaves no room for a prompt"):
        _load_and_fit(path, tokenizer, max_len, max_tokens=1024)


def test_tokenizer_without_chat_template_falls_back_to_raw_prompts_once(tmp_path, random_model_dir, capsys):
    from transformers import AutoTokenizer

    base = tmp_path / "base-model"  # the tiny model's tokenizer without its chat template
    base.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(random_model_dir, name), base / name)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    path = tmp_path / "t.jsonl"
    path.write_bytes(_lines(OK, OK))
    train, held_out = data_prompts.load_train_and_eval(DataConfig(train_path=str(path), eval_path=str(path)), tokenizer)
    assert [p.text for p in train + held_out] == ["1+1="] * 4
    err = capsys.readouterr().err
    assert err.count("[rlvr] warning") == 1 and "no chat template" in err and "data.apply_chat_template" in err
