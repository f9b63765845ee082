"""`rlvr data prepare`: each dataset's fixture (hand-written in its real field layout) prepared,
compared with hand-written expectations, and accepted by `rlvr validate`."""

from __future__ import annotations

import json
import os

import pytest

from rlvr.cli.main import main
from rlvr.data.prepare import last_boxed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "datasets")

# (name, fixture, [(id, answer)] written, skipped)
EXPECTED = [
    ("gsm8k", "gsm8k.jsonl", [(0, "72"), (1, "1234"), (2, "750000"), (3, "10"), (4, "-5"), (6, "50")], 1),
    ("math", "math.json", [(0, r"\frac{1}{2}"), (1, "(1, 2)"), (2, "5"), (3, r"2\sqrt{2}"), (4, r"\{-1, 1\}"),
                           (6, "10")], 1),
    ("numinamath", "numinamath-cot.jsonl", [(0, r"\frac{5}{2}"), (1, "(1, 2)"), (2, r"\frac{3}{4}"),
                                            (4, r"\textbf{(B)}\ 2")], 1),
    ("numinamath", "numinamath-tir.jsonl", [(0, "55"), (1, r"\frac{5}{6}")], 1),
    ("dapo-math-17k", "dapo-math-17k.jsonl", [("9a9b6eb4-a1cb-49d1-8c1e-62eaf2f74079", "34"),
                                              ("b426d104-244d-4831-a2c4-cd756b61700a", "142"),
                                              ("6ff0b17f-7e5c-4ae9-b5e9-63ebecd2b9ac", "2"),
                                              ("1d2e3f40-1111-4111-8111-111111111111", "7")], 1),
    ("deepscaler", "deepscaler.json", [(0, r"-\frac{2}{3}"), (1, "26"), (2, "(1, 2)"), (3, r"\frac{1}{4}"), (5, "6")], 1),
]


def _prepare(tmp_path, capsys, name, source, *extra) -> tuple[list[dict], str]:
    out = str(tmp_path / f"{name}.jsonl")
    assert main(["data", "prepare", name, "--from", source, "--out", out, *extra]) == 0
    with open(out, encoding="utf-8") as f:
        return [json.loads(line) for line in f], capsys.readouterr().out


@pytest.mark.parametrize("name,fixture,expected,skipped", EXPECTED, ids=[e[1] for e in EXPECTED])
def test_prepared_rows_match_the_expectations(tmp_path, capsys, name, fixture, expected, skipped):
    rows, summary = _prepare(tmp_path, capsys, name, os.path.join(FIXTURES, fixture))
    assert [(r["id"], r["answer"]) for r in rows] == expected
    assert all(r["dataset"] == name and ("prompt" in r or "messages" in r) for r in rows)
    assert f"{len(expected)} written, {skipped} skipped (" in summary


def test_prompts_and_metadata(tmp_path, capsys):
    math, _ = _prepare(tmp_path, capsys, "math", os.path.join(FIXTURES, "math.json"))
    assert math[0] == {"prompt": r"What is $\frac{2}{4}$ in lowest terms?", "answer": r"\frac{1}{2}", "dataset": "math",
                       "id": 0, "level": "Level 1", "type": "Prealgebra"}
    cot, _ = _prepare(tmp_path, capsys, "numinamath", os.path.join(FIXTURES, "numinamath-cot.jsonl"))
    assert cot[0]["prompt"] == "Solve for $x$: $2x + 3 = 8$." and cot[0]["subset"] == "olympiads"
    assert "messages" not in cot[0]  # NuminaMath's messages hold the solution
    dapo, _ = _prepare(tmp_path, capsys, "dapo-math-17k", os.path.join(FIXTURES, "dapo-math-17k.jsonl"))
    assert dapo[0]["prompt"].startswith("Solve the following math problem step by step.")
    assert dapo[2]["messages"] == [{"role": "system", "content": "You are a careful mathematician."},
                                   {"role": "user", "content": "Find the remainder when $2^{10}$ is divided by $7$."}]


def test_generic_with_dotted_fields_and_limit(tmp_path, capsys):
    rows, summary = _prepare(tmp_path, capsys, "generic", os.path.join(FIXTURES, "dapo-math-17k.jsonl"),
                             "--prompt-field", "prompt.0.content", "--answer-field", "reward_model.ground_truth",
                             "--id-field", "extra_info.index", "--limit", "2")
    assert [r["answer"] for r in rows] == ["34", "142"] and rows[0]["dataset"] == "generic"
    assert "2 written, 0 skipped" in summary
    rows, _ = _prepare(tmp_path, capsys, "generic", os.path.join(FIXTURES, "gsm8k.jsonl"), "--prompt-field",
                       "question", "--answer-field", "answer", "--extract", "gsm8k")
    assert [r["answer"] for r in rows][:2] == ["72", "1234"]


def test_parquet_and_save_to_disk_inputs(tmp_path, capsys):
    import datasets

    with open(os.path.join(FIXTURES, "dapo-math-17k.jsonl"), encoding="utf-8") as f:
        raws = [json.loads(line) for line in f]
    ds = datasets.Dataset.from_list(raws)
    ds.to_parquet(str(tmp_path / "dapo.parquet"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    want = [r["reward_model"]["ground_truth"] for r in raws if r["reward_model"]["ground_truth"]]
    for source in (str(tmp_path / "dapo.parquet"), str(tmp_path / "saved"), str(tmp_path / "saved") + ":train"):
        rows, _ = _prepare(tmp_path, capsys, "dapo-math-17k", source)
        assert [r["answer"] for r in rows] == want


def test_validate_accepts_the_prepared_files(tmp_path, capsys):
    for name, fixture, _, _ in EXPECTED:
        out = str(tmp_path / f"{fixture}.jsonl")
        assert main(["data", "prepare", name, "--from", os.path.join(FIXTURES, fixture), "--out", out]) == 0
        assert main(["validate", os.path.join(REPO, "recipes", "tiny-cpu.yaml"), f"data.train_path={out}",
                     f"data.eval_path={out}"]) == 0
        assert f"data.train_path: {out}: " in capsys.readouterr().err


def test_bad_inputs_are_one_line_and_exit_2(tmp_path, capsys):
    out = str(tmp_path / "o.jsonl")
    assert main(["data", "prepare", "gsm8k", "--from", str(tmp_path / "missing.jsonl"), "--out", out]) == 2
    assert main(["data", "prepare", "generic", "--from", os.path.join(FIXTURES, "gsm8k.jsonl"), "--out", out]) == 2
    assert main(["data", "prepare", "math", "--from", os.path.join(FIXTURES, "gsm8k.jsonl"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "--prompt-field" in err and "no rows written" in err
    assert not os.path.exists(out) or os.path.getsize(out) == 0


def test_last_boxed_edge_cases():
    assert last_boxed(r"\boxed{a} and \boxed{\frac{\sqrt{3}}{2}}") == r"\frac{\sqrt{3}}{2}"
    assert last_boxed(r"\boxed{x} then \boxedfoo") == "x"
    assert last_boxed(r"$\boxed{1,\!000}$") == r"1,\!000"
