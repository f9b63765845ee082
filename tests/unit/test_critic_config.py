"""The `critic` section and `algorithm.preset: ppo`: loading, checks with dotted keys, resources."""

import os

import pytest

from rlvr.config import RecipeError, load_recipe

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "tiny-cpu.yaml")


def test_ppo_preset_selects_gae_and_the_critic():
    from rlvr.config.critic import critic_on, critic_ranks

    cfg = load_recipe(RECIPE, ["algorithm.preset=ppo", "critic.lr=0.002", "algorithm.gae.lam=0.9"])
    a = cfg.algorithm
    assert a.advantage == "gae" and a.loss == "ppo_clip" and a.gae.lam == 0.9 and a.gae.whiten == "batch"
    assert not a.skip_uniform_groups and critic_on(a)
    ranks = critic_ranks(cfg.critic, a, cfg.trainer)
    assert ranks.lr == 0.002 and ranks.backend == cfg.trainer.backend and ranks.num_workers == cfg.trainer.num_workers
    assert ranks.share_prompts and not ranks.fused_logprobs and ranks.cpus_per_worker == cfg.critic.cpus_per_worker
    assert critic_ranks(cfg.critic, load_recipe(RECIPE).algorithm, cfg.trainer) is None  # grpo: no critic


@pytest.mark.parametrize("override,key", [
    ("critic.value_clip=0", "critic.value_clip"), ("critic.lr=-1", "critic.lr"),
    ("critic.warmup_steps=1000", "critic.warmup_steps"), ("algorithm.gae.gamma=1.5", "algorithm.gae.gamma"),
    ("algorithm.loss=gspo", "algorithm.loss"), ("critic.nope=1", "critic.nope"),
    ("algorithm.gae.whiten=global", "algorithm.gae.whiten"),
])
def test_bad_critic_settings_name_the_key(override, key):
    with pytest.raises(RecipeError) as err:
        load_recipe(RECIPE, ["algorithm.preset=ppo", override])
    assert err.value.key == key


def test_the_critic_shares_the_trainer_bundles_and_counts_in_the_cluster():
    from rlvr.cluster.fit import needs
    from rlvr.cluster.placement import bundles
    from rlvr.config import CriticConfig, RolloutConfig, TrainerConfig
    from rlvr.config.critic import critic_ranks

    t, r = TrainerConfig(num_workers=2, cpus_per_worker=1.0), RolloutConfig(num_engines=1, cpus_per_engine=0.5)
    critic = CriticConfig(cpus_per_worker=0.25).trainer_config(t)
    assert bundles(t, r, critic=critic) == [{"CPU": 1.25}, {"CPU": 1.25}]  # side: beside each trainer rank
    assert bundles(t, r, colocate=True, critic=critic) == [{"CPU": 1.75}, {"CPU": 1.25}]
    cfg = load_recipe(RECIPE, ["algorithm.preset=ppo", "critic.cpus_per_worker=1"])
    assert critic_ranks(cfg.critic, cfg.algorithm, cfg.trainer) is not None
    base = load_recipe(RECIPE)
    assert needs(cfg)["CPU"] == needs(base)["CPU"] + cfg.trainer.num_workers
