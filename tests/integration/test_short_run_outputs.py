"""One short real training run with the optional outputs on: every metric sink (TensorBoard event
files, a wandb offline run folder, an MLflow file-store run, read back and compared with
metrics.jsonl) and two named eval sets (one with the training verifiers and 4 samples per
prompt, one with its own verifier and reward worker)."""

from __future__ import annotations

import pytest

from rlvr.run.metrics import read_metrics
from tests.helpers.runs import run_short
from tests.helpers.tracking import mlflow_history, tensorboard_scalars, wandb_offline_history

pytestmark = pytest.mark.timeout(600)


SETS = ("eval.sets=[{name: arith4, path: builtin:arithmetic, num_prompts: 24, n: 4},"
        " {name: digits, path: builtin:arithmetic, num_prompts: 8,"
        "  verifiers: [{name: format, require_think: false, pattern: '[0-9]+'}]}]")


@pytest.fixture(scope="module")
def short_run(ray_cluster, warm_model_dir, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")  # no network here; the recipe's default mode is offline too
    try:
        yield run_short(tmp_path_factory.mktemp("outputs"), "tracked", [
            "trainer.total_steps=3", "eval.every=0", "eval.num_prompts=16", "logging.sinks=[tensorboard,wandb,mlflow]",
            "logging.plots=false", SETS])
    finally:
        mp.undo()


def test_named_eval_sets_are_logged_with_their_own_metrics(short_run):
    rows = read_metrics(short_run["run_dir"])
    evals = [r for r in rows if "eval/arith4/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 3]  # with the main eval: at the start and the end
    for r in evals:
        assert r["eval/arith4/pass@1"] == pytest.approx(r["eval/arith4/accuracy"])
        assert r["eval/arith4/pass@1"] <= r["eval/arith4/pass@2"] <= r["eval/arith4/pass@4"] <= 1.0
        assert 0.0 <= r["eval/arith4/maj@4"] <= 1.0 and r["eval/arith4/failures"] == 0
        # its own verifier (format: the answer is all digits), its own reward worker
        assert 0.0 < r["eval/digits/accuracy"] <= 1.0 and "eval/digits/pass@2" not in r
        assert r["eval/accuracy"] is not None and r["timing/eval_arith4"] > 0


def test_short_run_feeds_tensorboard_wandb_and_mlflow(short_run):
    run = short_run["run_dir"]
    rows = read_metrics(run)
    for key in ("reward/mean", "loss", "timing/step", "eval/arith4/pass@4"):
        want = {r["step"]: r[key] for r in rows if r.get(key) is not None}
        assert sorted(want) == ([0, 3] if key.startswith("eval/") else [1, 2, 3])
        assert tensorboard_scalars(run, key) == pytest.approx(want, rel=1e-6)
        assert mlflow_history(run, key)[1] == pytest.approx(want, rel=1e-6)
    evals = {r["step"]: r["eval/accuracy"] for r in rows if r.get("eval/accuracy") is not None}
    assert tensorboard_scalars(run, "eval/accuracy") == pytest.approx(evals)  # step 0 and the final eval
    folders, history = wandb_offline_history(run)
    assert len(folders) == 1
    assert {h["_step"]: h["reward/mean"] for h in history if "reward/mean" in h} == pytest.approx(
        {r["step"]: r["reward/mean"] for r in rows if "reward/mean" in r})
