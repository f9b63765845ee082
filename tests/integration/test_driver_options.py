"""Driver paths beyond the default recipe, run for a few steps through the real stack."""

from __future__ import annotations

from rlvr.run.metrics import read_metrics
from tests.helpers.runs import run_short


def test_kl_in_reward_and_hf_engine(ray_cluster, warm_model_dir, tmp_path):
    """`kl.where: reward` asks the trainer ranks for KL to the frozen reference before the
    advantages; with the transformers engine instead of vLLM."""
    summary = run_short(tmp_path, "kl-reward", ["algorithm.kl.coef=0.5", "algorithm.kl.where=reward",
                                                "rollout.engine=hf", "trainer.total_steps=3", "eval.every=0",
                                                "eval.num_prompts=16", "checkpoint.save_final=false"])
    rows = read_metrics(summary["run_dir"])
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert rows[1]["reward/kl_penalty"] == 0.0  # step 1 samples from the reference itself
    assert rows[3]["reward/kl_penalty"] > 0.0  # after two updates the policy has moved away
    assert all("timing/reference" in r for r in rows[1:])


def test_a_verifier_failing_on_most_samples_stops_the_run(ray_cluster, warm_model_dir, tmp_path):
    """A broken plugin (here: NaN for every sample) must not train silently."""
    import pytest

    from rlvr.reward.group import RewardFailureError

    broken = '[{name: "tests.helpers.bad_verifiers:Constant", value: .nan}]'
    with pytest.raises(RewardFailureError, match="failed on 100% of the batch"):
        run_short(tmp_path, "broken", [f"reward.verifiers={broken}", "trainer.total_steps=2", "eval.num_prompts=8"])
