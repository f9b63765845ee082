"""Exact resume: an uninterrupted run vs the same run resumed from its step-3 checkpoint.

The resumed run draws the same prompts at every step (sampler position in the
checkpoint), samples the same completions (per-step sampling seeds, the same weights)
and trains from the same optimizer, scheduler and RNG state, so its metrics match the
uninterrupted run's. A newer checkpoint whose weight file was truncated is skipped
with a warning naming it."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from rlvr.run.metrics import read_metrics
from tests.helpers.runs import run_short

pytestmark = pytest.mark.timeout(900)
COMMON = ["trainer.total_steps=6", "checkpoint.every=3", "checkpoint.keep_last=0", "eval.every=0",
          "eval.num_prompts=16", "logging.samples_per_step=8"]


def samples(run_dir: str, step: int) -> list[tuple[str, str]]:
    with open(os.path.join(run_dir, "samples", f"step_{step:06d}.jsonl")) as f:
        return [(row["prompt"], row["completion"]) for row in map(json.loads, f)]


def test_resume_continues_exactly_and_skips_a_torn_checkpoint(ray_cluster, warm_model_dir, tmp_path, capsys):
    full = run_short(tmp_path, "full", COMMON)
    a = full["run_dir"]
    assert sorted(os.listdir(os.path.join(a, "checkpoints"))) == ["final", "step_000003"]

    # run "resumed": the same run, as if it had died after step 4 with checkpoints at 3 and a torn one at 6
    b = os.path.join(tmp_path, "resumed")
    os.makedirs(os.path.join(b, "checkpoints"))
    shutil.copytree(os.path.join(a, "checkpoints", "step_000003"), os.path.join(b, "checkpoints", "step_000003"))
    torn = os.path.join(b, "checkpoints", "step_000006")
    shutil.copytree(os.path.join(a, "checkpoints", "final"), torn)
    with open(os.path.join(torn, "model.safetensors"), "r+b") as f:
        f.truncate(1000)
    with open(os.path.join(a, "metrics.jsonl")) as src, open(os.path.join(b, "metrics.jsonl"), "w") as dst:
        dst.writelines(line for line in src if json.loads(line)["step"] <= 4)  # step 4 will be done again
    capsys.readouterr()

    resumed = run_short(tmp_path, "resumed", COMMON + ["checkpoint.resume=auto"])
    out = capsys.readouterr().out
    assert f"skipping checkpoint {torn}: model.safetensors has 1000 bytes" in out
    assert "resumed at step 3" in out

    rows_a, rows_b = read_metrics(a), read_metrics(b)
    assert [r["step"] for r in rows_b] == [0, 1, 2, 3, 4, 5, 6]  # no step lost, none twice
    for step in (4, 5, 6):
        assert samples(b, step) == samples(a, step)  # the same prompts and the same completions
        ra, rb = rows_a[step], rows_b[step]
        for key in ("reward/mean", "loss", "grad_norm", "response_length/mean", "train/entropy"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), (step, key)
    from safetensors.torch import load_file

    final_a = load_file(os.path.join(a, "checkpoints", "final", "model.safetensors"))
    final_b = load_file(os.path.join(resumed["checkpoint"], "model.safetensors"))
    assert max((final_a[k] - final_b[k]).abs().max().item() for k in final_a) < 1e-5
