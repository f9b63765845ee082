"""The conformance kit with samples files (`rlvr rewards check --samples`), its batched-verifier
checks and SKIPs, `rlvr rewards score` with metadata / stdin / samples files, `rlvr rewards new`,
`rlvr rewards list`'s kinds and options, did-you-mean, and verifier parts in the step metrics.

The verifiers below are loaded by the reward worker's child process as
"tests.unit.test_rewards_kit:<name>"."""

from __future__ import annotations

import doctest
import importlib
import io
import json
import re
import sys

import pytest

from rlvr.cli.rewards import main
from rlvr.reward.conformance import check_verifier, format_table
from rlvr.reward.samples import read_samples
from rlvr.types import RewardInput, SampleReward, Score

ME = __name__
METRES = {"mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0}
UNITS_SAMPLES = [
    {"prompt": "How far is 3 km in metres?", "completion": "<think>3 * 1000</think> 3000 m", "answer": "3 km", "expect": 1},
    {"prompt": "How far?", "completion": "3 km", "answer": "3000 m", "expect": 1},
    {"prompt": "How far?", "completion": "30 m", "answer": "3000 m", "expect": 0},
    {"prompt": "How long?", "completion": "<think>hm</think> 25 cm", "answer": "0.25 m", "expect_min": 1},
    {"prompt": "How long?", "completion": "I do not know", "answer": "0.25 m", "expect_max": 0},
    {"prompt": "How long?", "completion": "250 mm", "answer": "0.25 m", "metadata": {"source": "x.jsonl row 3"},
     "expect": 1},
]


def _metres(text: str) -> float | None:
    m = re.search(r"(-?\d+(?:\.\d+)?)\s*(mm|cm|km|m)\b", text.rsplit("</think>", 1)[-1])
    return float(m.group(1)) * METRES[m.group(2)] if m else None


def units(sample: RewardInput) -> Score:
    """A correct domain verifier: "3 km" == "3000 m". A reference answer without a unit cannot
    be scored (a reported failure), as with the kit's built-in sample (answer "42")."""
    want = _metres(sample.answer)
    if want is None:
        return Score(0.0, failure=f"reference answer {sample.answer[:40]!r} has no unit")
    got = _metres(sample.completion)
    return Score(float(got is not None and abs(got - want) <= 1e-9 * max(1.0, abs(want))),
                 {"has_unit": float(got is not None)})


class BatchedUnits:
    batched = True
    max_batch_size = 5

    def __call__(self, samples):
        return [units(s) for s in samples]


class OneResult:
    """Batched, but always returns one result (right for a batch of one)."""
    batched = True

    def __call__(self, samples):
        return [units(samples[0])]


class Reversed:
    """Batched, results in reverse order (right for a batch of one)."""
    batched = True

    async def __call__(self, samples):
        return [units(s) for s in reversed(samples)]


def always_fails(sample: RewardInput) -> Score:
    return Score(0.0, failure="cannot score anything")


def echo_metadata(sample: RewardInput) -> Score:
    """Scores `metadata["weight"]`, with the completion's and answer's lengths as parts."""
    return Score(float(sample.metadata["weight"]), {"completion_chars": len(sample.completion),
                                                    "answer_chars": len(sample.answer)})


@pytest.fixture
def units_file(tmp_path):
    path = tmp_path / "units.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in UNITS_SAMPLES) + "\n")
    return str(path)


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def statuses(results) -> dict[str, str]:
    return {r.name: r.status for r in results}


# ---- the kit with samples ----

def test_a_correct_domain_verifier_passes_with_its_samples(capsys, units_file):
    code, out = run(capsys, "check", f"{ME}:units", "--samples", units_file, "--timing-samples", "3")
    assert code == 0, out
    assert "FAIL" not in out and "SKIP" not in out and "11/11 passed" in out
    assert re.search(r"expected\s+PASS.*6 row\(s\) as expected", out)


def test_without_samples_the_domain_checks_skip_not_fail(capsys):
    code, out = run(capsys, "check", f"{ME}:units", "--timing-samples", "3")
    assert code == 0, out  # the built-in sample (answer "42") means nothing to a units verifier
    rows = {line.split()[0]: line for line in out.splitlines()[1:-2]}
    for check in ("returns_score", "empty", "huge", "unicode", "surrogates_nul", "deterministic", "latency"):
        assert " SKIP " in rows[check] and "--samples" in rows[check], rows[check]
    assert " PASS " in rows["loads"] and " PASS " in rows["no_crash_or_hang"]


def test_expected_scores_are_checked(tmp_path):
    path = tmp_path / "wrong.jsonl"
    path.write_text(json.dumps({"completion": "3 km", "answer": "3000 m", "expect": 0}) + "\n")
    results = check_verifier(f"{ME}:units", samples=read_samples(str(path)), n_timing=2)
    [expected] = [r for r in results if r.name == "expected"]
    assert expected.failed and "line 1: got 1, expected 0" in expected.detail


def test_skip_not_pass_when_every_sample_fails(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"completion": "3 km", "answer": "3000 m"}) + "\n")
    results = check_verifier(f"{ME}:always_fails", samples=read_samples(str(path)), n_timing=2)
    got = statuses(results)
    assert got["returns_score"] == "FAIL"
    assert got["deterministic"] == "SKIP" and got["finite"] == "SKIP"  # nothing was scored: nothing to test
    assert "FAILED" in format_table(results) and "skipped" in format_table(results)


def test_a_bad_samples_file_is_a_usage_error(capsys, tmp_path):
    path = tmp_path / "typo.jsonl"
    path.write_text('{"completion": "x", "answer": "1"}\n{"completion": "y", "expected": 1}\n')
    assert main(["check", f"{ME}:units", "--samples", str(path)]) == 2
    assert "line 2: unknown field 'expected'" in capsys.readouterr().err


# ---- batched verifiers ----

def test_a_correct_batched_verifier_passes(units_file):
    results = check_verifier(f"{ME}:BatchedUnits", samples=read_samples(units_file), n_timing=2)
    assert not [r for r in results if not r.passed], format_table(results)
    assert {"batch_count", "batch_order"} <= set(statuses(results))


def test_the_kit_catches_a_batched_verifier_that_returns_one_result(units_file):
    results = check_verifier(f"{ME}:OneResult", samples=read_samples(units_file), n_timing=2)
    got = statuses(results)
    assert got["batch_count"] == "FAIL" and got["returns_score"] == "PASS", format_table(results)
    assert "returned 1 results for" in next(r.detail for r in results if r.name == "batch_count")


def test_the_kit_catches_a_batched_verifier_that_reverses_its_results(capsys, units_file):
    code, out = run(capsys, "check", f"{ME}:Reversed", "--samples", units_file, "--timing-samples", "2")
    assert code == 1
    assert re.search(r"batch_order\s+FAIL.*do not follow their sample", out), out
    assert re.search(r"batch_count\s+PASS", out)


# ---- score ----

def test_score_with_metadata_and_a_completion_on_stdin(capsys, monkeypatch):
    completion = "x" * (1 << 20)  # 1 MB: too long for a command-line argument
    monkeypatch.setattr(sys, "stdin", io.StringIO(completion))
    code, out = run(capsys, "score", f"{ME}:echo_metadata", "--completion-file", "-", "--answer", "abc",
                    "--metadata", '{"weight": 0.25}')
    assert code == 0, out
    assert json.loads(out) == {"value": 0.25, "parts": {"completion_chars": float(1 << 20), "answer_chars": 3.0},
                               "failure": None}


def test_score_reads_files_and_rejects_bad_metadata(capsys, tmp_path):
    (tmp_path / "answer.txt").write_text("3 km")
    code, out = run(capsys, "score", f"{ME}:units", "--completion", "3000 m", "--answer-file", str(tmp_path / "answer.txt"))
    assert code == 0 and json.loads(out)["value"] == 1.0
    assert main(["score", f"{ME}:units", "--completion", "1", "--metadata", "[1]"]) == 2
    assert "--metadata must be a JSON object" in capsys.readouterr().err


def test_score_a_samples_file_prints_one_line_per_row(capsys, units_file):
    code, out = run(capsys, "score", f"{ME}:units", "--samples", units_file)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["value"] for r in rows] == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]


# ---- new, list, names ----

def test_the_scaffold_passes_check_as_generated(capsys, tmp_path, monkeypatch):
    assert main(["new", "units_match", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "rlvr-units-match"
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points."rlvr.rewards"]\nunits_match = "rlvr_units_match:UnitsMatch"' in pyproject
    monkeypatch.syspath_prepend(str(root))  # the worker's child process gets sys.path too
    code, out = run(capsys, "check", "rlvr_units_match:UnitsMatch", "--samples", str(root / "samples.jsonl"),
                    "--timing-samples", "3")
    assert code == 0 and "11/11 passed" in out, out
    module = importlib.import_module("rlvr_units_match")
    assert doctest.testmod(module).attempted > 0 and doctest.testmod(module).failed == 0
    spec = importlib.util.spec_from_file_location("generated_test", root / "tests" / "test_units_match.py")
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    generated.test_doctests()
    generated.test_conformance_kit()
    assert main(["new", "units_match", "--dir", str(tmp_path)]) == 2  # exists
    assert main(["new", "Bad-Name", "--dir", str(tmp_path)]) == 2


def test_list_shows_kind_options_and_package(capsys):
    code, out = run(capsys, "list")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "rlvr 0.1.0" in rows["length"] and " plain " in rows["length"]
    assert "max_length, cache_length=None, unit='chars'" in rows["length"]
    from rlvr.reward.catalog import kind_of

    assert kind_of(Reversed) == "batched, async" and kind_of(BatchedUnits) == "batched" and kind_of(units) == "plain"


@pytest.mark.parametrize("argv", [["list", "maht"], ["check", "maht"], ["score", "maht", "--completion", "1"]])
def test_unknown_names_get_a_suggestion(capsys, argv):
    assert main(argv) == 2
    assert "unknown verifier 'maht' (did you mean 'math'?)" in capsys.readouterr().err


def test_recipe_verifier_typo_gets_a_suggestion():
    from rlvr.config.reward import VerifierItem, check_verifier_names

    with pytest.raises(Exception, match=r"did you mean 'format'"):
        check_verifier_names(VerifierItem.parse([{"name": "fromat"}]), "reward.verifiers")


# ---- parts in the step metrics ----

def test_parts_are_averaged_into_the_metrics_and_bounded():
    from rlvr.reward.worker import reward_metrics

    results = [SampleReward(1.0, {"units": 1.0}, {}, {"units": {"has_unit": 1.0, "error/m": 0.5}}),
               SampleReward(0.0, {"units": 0.0}, {}, {"units": {"has_unit": 0.0}}),
               SampleReward(0.0, {"units": 0.0}, {"units": "timeout: x"}, {})]
    m = reward_metrics(results)
    assert m["reward/units/has_unit"] == 0.5 and m["reward/units/error_m"] == 0.5
    assert m["reward/units/mean"] == pytest.approx(1 / 3)  # rlvr's own metric, not overwritten
    hostile = [SampleReward(0.0, {"evil": 0.0}, {}, {"evil": {f"p{i}_{j}": 1.0 for j in range(100)}}) for i in range(50)]
    hostile[0].parts["evil"].update({"mean": 99.0, "failures": 99.0, "nan": float("nan")})
    m = reward_metrics(hostile)
    parts = [k for k in m if k.startswith("reward/evil/") and not k.startswith(("reward/evil/failures", "reward/evil/mean"))]
    assert len(parts) == 16 and m["reward/evil/mean"] == 0.0 and m["reward/evil/failures"] == 0.0
    assert "reward/evil/nan" not in m
