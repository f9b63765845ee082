"""Checks that need more than one section (each section checks itself in its `check()`)."""

from __future__ import annotations

import os

from rlvr.config.algorithm import GROUP_ADVANTAGES
from rlvr.config.checks import one_of, require
from rlvr.config.cluster import logical_cpus_needed
from rlvr.config.critic import critic_ranks
from rlvr.config.model import VLLM_MAX_LORA_RANKS
from rlvr.config.reward import VerifierItem, is_judge, verifier_keys


def check_across(cfg) -> None:
    """`cfg` is the root `Config`, every section already checked."""
    r, a, t, lora = cfg.rollout, cfg.algorithm, cfg.trainer, cfg.model.lora
    require(r.n >= 2 or a.advantage not in GROUP_ADVANTAGES, "rollout.n",
            f"group size must be >= 2 for {a.advantage!r} (advantages are relative to the group), got {r.n}")
    require(0 < a.overlong.cache_len <= r.max_tokens or not a.overlong.enabled, "algorithm.overlong.cache_len",
            f"must be in [1, rollout.max_tokens={r.max_tokens}]")
    require(cfg.data.prompts_per_step * r.n >= t.num_workers, "data.prompts_per_step",
            "a step must have at least one sample per trainer rank")
    if cfg.eval.accuracy_verifier is not None:
        one_of(cfg.eval.accuracy_verifier, "eval.accuracy_verifier", verifier_keys(list(cfg.reward.verifiers)))
    require(not a.distill_coef or cfg.teacher.path is not None, "teacher.path",
            "algorithm.distill_coef > 0 (preset distill) needs a teacher model: a folder or hub id")
    _check_lora(lora, t, r)
    require(cfg.critic.warmup_steps < t.total_steps or a.advantage != "gae", "critic.warmup_steps",
            f"must be < trainer.total_steps={t.total_steps} (the policy never trains otherwise)")
    _check_placement(cfg)
    _check_agent(cfg)
    _check_eval_judges(cfg)


def _check_eval_judges(cfg) -> None:
    """An eval set's own judge verifier asks the run's judge (`reward.judge`) unless it names a url."""
    for i, s in enumerate(cfg.eval.set_items()):
        for j, item in enumerate(VerifierItem.parse(s.verifiers, f"eval.sets[{i}].verifiers") if s.verifiers else []):
            require(not is_judge(item.name) or "url" in item.options or cfg.reward.judge.model is not None,
                    f"eval.sets[{i}].verifiers[{j}].url", "a judge verifier needs a judge: set reward.judge.model "
                    "(the run starts one) or give the verifier's url")


def _check_agent(cfg) -> None:
    r = cfg.rollout
    if r.agent is None:
        return
    require(not (cfg.algorithm.kl.coef and cfg.algorithm.kl.where == "reward"), "algorithm.kl.where",
            "'reward' is not supported with rollout.agent (an episode is several sequences): use 'loss'")
    if r.agent_host not in ("127.0.0.1", "localhost", "::1"):
        from rlvr.config.run import resolve_token

        require(resolve_token(cfg.service.token_env, cfg.service.token_file) is not None, "rollout.agent_host",
                f"{r.agent_host!r} is beyond loopback: the endpoint needs a token (set {cfg.service.token_env} "
                "or service.token_file)")


def _check_lora(lora, t, r) -> None:
    require(not (lora.rank and t.compile != "off"), "trainer.compile",
            "is not supported with LoRA (model.lora.rank > 0): the compiled modules would trace peft's layers")
    if lora.sync == "adapter" and lora.rank > 0:
        require(r.engine == "vllm", "model.lora.sync",
                f"'adapter' needs the vllm engine (rollout.engine={r.engine!r} takes merged weights)")
        require(lora.rank <= VLLM_MAX_LORA_RANKS[-1], "model.lora.sync",
                f"'adapter': vLLM serves LoRA ranks up to {VLLM_MAX_LORA_RANKS[-1]}, got rank {lora.rank}")


def _check_placement(cfg) -> None:
    r, c = cfg.rollout, cfg.cluster
    require(not (r.max_staleness and c.placement == "colocate"), "rollout.max_staleness",
            "async rollouts generate while the trainer trains: they need cluster.placement=side")
    if c.placement == "colocate":
        require(r.num_engines <= cfg.trainer.num_workers, "rollout.num_engines",
                f"colocate puts each engine beside a trainer rank: at most trainer.num_workers="
                f"{cfg.trainer.num_workers} engines, got {r.num_engines}")
    if c.num_cpus is not None and not (c.address or os.environ.get("RAY_ADDRESS")):
        critic = critic_ranks(cfg.critic, cfg.algorithm, cfg.trainer)
        need = logical_cpus_needed(cfg.trainer, r, cfg.reward, critic)  # a private cluster would wait forever for the rest
        require(c.num_cpus >= need, "cluster.num_cpus",
                f"the recipe's trainer ranks, engines and reward workers need {need} logical CPUs, got "
                f"{c.num_cpus} (raise it, or leave it null to size the cluster to the recipe)")
