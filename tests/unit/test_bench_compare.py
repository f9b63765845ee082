"""The arithmetic of `bench.compare_trl` (no runs): medians after warm-up, tokens/s, floors."""

import pytest

from bench.compare_trl import floors, stacked_phases, summarize


def _spec(**kw):
    return {"params": 10_000_000, "prompts_per_step": 2, "group_size": 4, "max_new_tokens": 8, "warmup_steps": 1, **kw}


def test_summary_takes_medians_after_warmup_and_counts_tokens_the_same_way_for_both_systems():
    steps = [{"wall_s": 100.0, "generate_s": 50.0, "train_s": 50.0},  # warm-up: ignored
             {"wall_s": 2.0, "generate_s": 1.0, "train_s": 0.9},
             {"wall_s": 4.0, "generate_s": 1.5, "train_s": 2.0},
             {"wall_s": 3.0, "generate_s": 1.2, "train_s": 1.5}]
    s = summarize({"steps": steps, "peak_rss_mb": 1234.0}, _spec(), prompt_len=12.0)
    assert s["step_s"] == 3.0 and s["steps_measured"] == 3
    assert s["generated_tok_s"] == pytest.approx(2 * 4 * 8 / 3.0)
    assert s["trained_tok_s"] == pytest.approx(2 * 4 * (12 + 8) / 3.0)
    assert s["phases"] == {"generate": 1.2, "train": 1.5}
    parts = stacked_phases(s)
    assert parts["overhead"] == pytest.approx(0.3) and sum(parts.values()) == pytest.approx(3.0)


def test_floor_counts_each_prompt_once_for_generation_and_shared_training():
    f = floors(_spec(), prompt_len=12.0, gflops=100.0)
    n = 10_000_000
    assert f["generate_tflop"] == pytest.approx(2 * n * (2 * 12 + 8 * 8) / 1e12)
    assert f["train_plain_tflop"] == pytest.approx(6 * n * 8 * (12 + 8) / 1e12)
    assert f["train_shared_prompt_tflop"] == pytest.approx(6 * n * (2 * 12 + 8 * 8) / 1e12)
    assert f["train_plain_s"] == pytest.approx(f["train_plain_tflop"] * 1e12 / 100e9)


def test_rounds_pool_each_runs_steps_after_its_own_warmup_and_ratio_per_round():
    from bench.compare_trl import pooled, round_ratios

    def run(*walls, rss=100.0):
        return {"steps": [{"wall_s": w} for w in walls], "peak_rss_mb": rss}

    trl = [run(50.0, 10.0, 12.0), run(50.0, 20.0, 22.0, rss=300.0)]  # the machine slowed down in round 2
    mine = [run(90.0, 5.0, 7.0), run(90.0, 10.0, 12.0)]
    merged = pooled(trl, warmup=1)
    assert [s["wall_s"] for s in merged["steps"]] == [10.0, 12.0, 20.0, 22.0] and merged["peak_rss_mb"] == 300.0
    ratios = round_ratios({"TRL": trl, "rlvr": mine}, _spec(), prompt_len=12.0)
    assert ratios == {"TRL": [pytest.approx(6.0 / 11.0), pytest.approx(11.0 / 21.0)]}


def test_the_plain_pytorch_comparison_does_the_trainers_work(tmp_path):
    """`bench.gpu.trainer_step --compare-plain` on a tiny shape (CPU, fp32): the plain loop's
    first step has the trainer's loss and gradient norm (same weights, samples, loss and
    normaliser), so the timing ratio it prints compares the same work."""
    import json
    import re
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "bench.gpu.trainer_step", "--micro", "2", "4", "--steps", "1", "--seqs", "6",
         "--prompt", "10", "--completion", "14", "--hidden", "64", "--layers", "2", "--heads", "2", "--kv-heads", "1",
         "--head-dim", "32", "--intermediate", "128", "--vocab", "512", "--dtype", "float32", "--compare-plain",
         "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=300, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    assert out.returncode == 0, out.stderr[-2000:]
    first = re.search(r"\] micro 2 step 0 \(warm-up\): \S+ loss (\S+) grad_norm (\S+)", out.stdout)
    plain = re.search(r"\] plain micro 2 step 0 \(warm-up, compiles\): \S+ loss (\S+) grad_norm (\S+)", out.stdout)
    assert first and plain, out.stdout[-2000:]
    assert float(plain.group(1)) == pytest.approx(float(first.group(1)), abs=1e-4)
    assert float(plain.group(2)) == pytest.approx(float(first.group(2)), rel=1e-3)
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert [r["plain"]["mode"] for r in runs] == ["eager", "eager"] and all(r["plain"]["step_s"] > 0 for r in runs)
    assert "rlvr/plain = " in out.stdout
