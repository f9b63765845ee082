"""`rlvr train`: the run folder and its status, the model and data, the actor groups, the loop
(`rlvr.loop.loop.run_loop`), and the clean-up, in that order.

Everything local (recipe, model build, data, prompt lengths) happens before any actor
starts, so a bad dataset or a busy service port fails in seconds. Then, in the order a
step uses them: the rollout engines, the trainer ranks (a placement group; colocated
engines share its bundles), the reward workers, the weight sync between them and the
evaluator. Whatever started is stopped on the way out, whatever happened.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from rlvr.config import Config, to_yaml
from rlvr.loop.control import StopRequested


def train(cfg: Config) -> dict:
    """Run `cfg.trainer.total_steps` RL steps; returns a summary of the run."""
    return in_run_folder(cfg, cfg.trainer.total_steps, lambda run_dir, status: _run(cfg, run_dir, status))


def in_run_folder(cfg: Config, total_steps: int, body) -> dict:
    """`body(run_dir, status)` with the run folder around it (`rlvr train`, `rlvr sft`): recipe.yaml,
    status.json and its heartbeat, the status service if the recipe asks, the final state and the
    plots. `body` returns the run's summary (with `stopped_at`)."""
    from rlvr.cluster.connect import job_submission_id
    from rlvr.run.files import atomic_write_text
    from rlvr.run.plots import plot_run_safely
    from rlvr.run.status import RunStatus
    from rlvr.service.server import start_for_run

    run_dir = os.path.join(cfg.run.output_dir, cfg.run.name)
    atomic_write_text(os.path.join(run_dir, "recipe.yaml"), to_yaml(cfg))
    status = RunStatus(run_dir, cfg.run.name, total_steps, heartbeat_s=cfg.service.heartbeat_s,
                       ray_job_id=job_submission_id())
    status.start_heartbeat()
    server = None
    try:
        server = start_for_run(cfg.service, cfg.run.output_dir, status)  # a busy port fails here, before any actor
        summary = body(run_dir, status)
    except StopRequested as e:
        status.close("stopped", error=str(e))
        raise
    except BaseException as e:
        status.close("failed", error=f"{type(e).__name__}: {e}"[:2000])
        raise
    finally:
        if server is not None:
            server.stop()
    status.close("stopped" if summary["stopped_at"] is not None else "completed")
    summary["plots"] = plot_run_safely(run_dir) if cfg.logging.plots else []
    return summary


@dataclass
class Inputs:
    """What the loop starts from, prepared locally: the model folder and the prompts (and for
    multi-turn episodes: the tokenizer, the tools' schemas and the environment)."""

    model_path: str
    train_prompts: list
    eval_prompts: list
    eval_sets: list
    skipped: dict = field(default_factory=dict)  # data/skipped_too_long counts (step 0's metrics row)
    tokenizer: object = None
    max_len: int | None = None
    tools: list | None = None  # the tools' schemas, as the chat template gets them
    make_env: object = None  # multi-turn: builds an environment object (one per episode)
    resume: str | None = None  # the checkpoint to resume from (`checkpoint.resume`, verified)
    judge_path: str | None = None  # `reward.judge.model`'s folder (None: no judge engine)


def prepare(cfg: Config) -> Inputs:
    """The plugins' options checked (`rlvr.cluster.plugin_check`), the model folder (the built-in
    tiny model is built once and cached) and the rendered prompts, too-long ones dropped."""
    from transformers import AutoTokenizer

    from rlvr.cluster.plugin_check import check_plugin_options
    from rlvr.data.prompts import drop_prompts_too_long, load_train_and_eval, model_max_len
    from rlvr.eval.sets import prepare_sets

    check_plugin_options(cfg)  # a bad verifier / tool option is a RecipeError now, not an actor's death later
    model_path = model_folder(cfg.model, cfg.data, cfg.logging.progress)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tools, make_env = multi_turn_parts(cfg.rollout.multi_turn) if cfg.rollout.multi_turn.enabled else (None, None)
    start = (lambda row: make_env().reset(row, cfg.data.system_prompt)) if make_env is not None else None
    train_prompts, eval_prompts = load_train_and_eval(cfg.data, tokenizer, tools, start)
    max_len = model_max_len(model_path, cfg.rollout.engine_kwargs)
    room = cfg.rollout.multi_turn.max_total_tokens if make_env is not None else None  # an episode's whole length
    fits = min(max_len, room) if max_len and room else (max_len or room)
    train_prompts, eval_prompts, skipped = drop_prompts_too_long(
        train_prompts, eval_prompts, fits, cfg.data, cfg.rollout.max_tokens, cfg.eval.max_tokens,
        limit=" (or rollout.multi_turn.max_total_tokens)" if room else "")
    sets = prepare_sets(cfg.eval, cfg.data, cfg.rollout, cfg.run.seed, tokenizer, max_len, tools, start)
    judge = cfg.reward.judge
    judge_path = model_folder(dataclasses.replace(cfg.model, path=judge.model), cfg.data, cfg.logging.progress) \
        if judge.model else None
    return Inputs(model_path, train_prompts, eval_prompts[: cfg.eval.num_prompts], sets, skipped, tokenizer, max_len,
                  tools, make_env, judge_path=judge_path)


def model_folder(model_cfg, data_cfg, progress: bool = True) -> str:
    """The model the run starts from: a built-in one (built once and cached; `builtin:random-<family>`:
    the model matrix's tiny random model of that family), a local folder or a hub id."""
    from rlvr.config.model import BUILTIN_TINY_MODEL, BUILTIN_TINY_TOOLS, random_family

    if random_family(model_cfg.path):
        from rlvr.models.families import ensure_family_model

        return ensure_family_model(random_family(model_cfg.path), model_cfg.cache_dir)
    if model_cfg.path == BUILTIN_TINY_MODEL:
        from rlvr.models.tiny import ensure_tiny_model

        return ensure_tiny_model(model_cfg, data_cfg.arithmetic, progress=progress)
    if model_cfg.path == BUILTIN_TINY_TOOLS:
        from rlvr.models.tiny_tools import ensure_tiny_tools_model

        return ensure_tiny_tools_model(model_cfg, data_cfg.tool_arithmetic, progress=progress)
    return os.path.expanduser(model_cfg.path)


def multi_turn_parts(mt) -> tuple[list[dict], object]:
    """The tools' schemas (read in a tool worker's child process, as every use of a tool's code
    is) and what builds the environment (`rollout.multi_turn.env`; environments run here in
    the driver, one object per episode)."""
    from rlvr.tools.env import env_factory
    from rlvr.tools.worker import ToolWorker

    worker = ToolWorker(list(mt.tools), mt.tool_timeout_s, mt.max_observation_chars, procs=1,
                        env_passthrough=list(mt.tool_env_passthrough))
    try:
        schemas = worker.schemas
    finally:
        worker.shutdown()
    return schemas, env_factory(mt.env, mt.env_options)


@dataclass
class Groups:
    """The run's actor groups (each owns its actors and its recovery)."""

    rollouts: object = None
    trainer: object = None
    rewards: object = None
    sync: object = None
    evaluator: object = None
    pg: object = None
    tools: object = None  # multi-turn: the tool workers
    episodes: object = None  # multi-turn: the EpisodeRunner every batch and evaluation uses (agents: AgentRunner)
    agent: object = None  # rollout.agent: the endpoint and the agent workers (rlvr.agent.service)
    judge: object = None  # reward.judge: the judge engines and their endpoint (rlvr.agent.judge)
    critic: object = None  # PPO (algorithm.advantage: gae): the critic ranks (rlvr.trainer.critic.CriticGroup)

    def faults(self) -> dict:
        return {"faults/rollout_restarts": self.rollouts.restarts, "faults/reward_restarts": self.rewards.restarts,
                "faults/reward_kills": self.rewards.kills, "faults/trainer_restarts": self.trainer.restarts,
                **({"faults/tool_restarts": self.tools.restarts, "faults/tool_kills": self.tools.kills}
                   if self.tools is not None else {}),
                **({"faults/agent_restarts": self.agent.restarts} if self.agent is not None else {}),
                **({"faults/judge_restarts": self.judge.restarts} if self.judge is not None else {})}

    def places(self) -> dict:
        return {"trainers": self.trainer.places(), "engines": self.rollouts.places(), "rewarders": self.rewards.places(),
                **({"judges": self.judge.places()} if self.judge is not None else {}),
                **({"critics": self.critic.places()} if self.critic is not None else {})}

    def stop(self) -> None:
        """Stop what started (the cluster may outlive the run)."""
        from ray.util.placement_group import remove_placement_group

        for group in (self.evaluator, self.agent, self.tools, self.rewards, self.judge, self.rollouts, self.critic,
                      self.trainer):
            if group is not None:
                group.stop()
        if self.pg is not None:
            remove_placement_group(self.pg)


def start_groups(cfg: Config, inputs: Inputs, run_dir: str, groups: Groups) -> Groups:
    """Start every group into `groups` (filled as they start, so the caller can stop them)."""
    from rlvr.cluster.env import runtime_env_for_actors
    from rlvr.cluster.placement import bundles, create_placement_group
    from rlvr.config.critic import critic_ranks
    from rlvr.config.model import lora_sync_mode
    from rlvr.eval.sets import Evaluator
    from rlvr.reward.group import RewardGroup
    from rlvr.agent.judge import with_judge
    from rlvr.rollout.group import RolloutGroup
    from rlvr.run.console import phase_bar
    from rlvr.sync.group import WeightSync
    from rlvr.trainer.group import TrainerGroup

    t, r, timeout = cfg.trainer, cfg.rollout, cfg.cluster.rpc_timeout_s
    colocate = cfg.cluster.placement == "colocate"
    judge = cfg.reward.judge if inputs.judge_path else None
    critic = critic_ranks(cfg.critic, cfg.algorithm, t)  # its rank i sits in trainer rank i's bundle
    groups.pg = create_placement_group(bundles(t, r, colocate, judge, critic), timeout_s=cfg.cluster.startup_timeout_s)
    bar = phase_bar(cfg.logging.progress, 3, "starting engines, trainers, reward workers", unit="group")
    # engines, trainer ranks and reward workers start side by side (each group's `wait=False`) and
    # are waited for in turn; colocated on GPUs the engines start first: vLLM sizes its KV cache
    # from the GPU memory it finds free, which a trainer loading beside it would change
    overlap = not (colocate and r.gpus_per_engine)
    groups.rollouts = RolloutGroup(r, inputs.model_path, cfg.run.seed, cfg.model.dtype, lora=cfg.model.lora,
                                   colocate_pg=groups.pg if colocate else None, timeout_s=timeout, wait=not overlap)
    groups.trainer = TrainerGroup(t, cfg.algorithm, inputs.model_path, cfg.run.seed, pg=groups.pg,
                                  runtime_env=runtime_env_for_actors(cfg.model.cache_dir), temperature=r.temperature,
                                  norm_tokens=r.max_tokens, lora=cfg.model.lora, teacher=cfg.teacher.path,
                                  timeout_s=timeout, wait=False)
    if critic is not None:
        from rlvr.trainer.critic import CriticGroup

        groups.critic = CriticGroup(cfg.critic, t, cfg.algorithm, inputs.model_path, cfg.run.seed, pg=groups.pg,
                                    runtime_env=runtime_env_for_actors(cfg.model.cache_dir), timeout_s=timeout,
                                    wait=False)
    if judge is None:  # else its verifiers need the judge's address: they start after it
        groups.rewards = RewardGroup(list(cfg.reward.verifiers), cfg.reward, timeout_s=timeout, wait=False)
    groups.rollouts.wait_started()
    bar.update()
    for group in (groups.trainer, groups.critic):
        if group is not None:
            group.wait_started()
    bar.update()
    if judge is not None:
        from rlvr.agent.judge import start_judge

        groups.judge = start_judge(judge, inputs.judge_path, cfg.run.seed, pg=groups.pg, timeout_s=timeout)
    if groups.rewards is None:  # the verifiers need the judge's address
        groups.rewards = RewardGroup(with_judge(list(cfg.reward.verifiers), groups.judge), cfg.reward,
                                     timeout_s=timeout, wait=False)
    groups.rewards.wait_started()
    for s in inputs.eval_sets:  # an eval set's own judge verifiers ask the same judge
        if s.verifiers is not None:
            s.verifiers = with_judge(s.verifiers, groups.judge)
    if r.multi_turn.enabled:
        from rlvr.data.prompts import template_kwargs
        from rlvr.rollout.episodes import EpisodeRunner
        from rlvr.tools.group import ToolGroup

        groups.tools = ToolGroup(r.multi_turn, timeout_s=timeout)
        groups.episodes = EpisodeRunner(r.multi_turn, inputs.make_env, groups.tools, inputs.tokenizer,
                                        template_kwargs(cfg.data, inputs.tools), inputs.max_len)
    if r.agent is not None:
        from rlvr.agent.service import start_agent_service
        from rlvr.data.prompts import template_kwargs

        groups.agent, groups.episodes = start_agent_service(
            r, cfg.service, groups.rollouts, inputs.tokenizer, model_name=cfg.model.path, max_len=inputs.max_len,
            template_kwargs=template_kwargs(cfg.data), timeout_s=timeout)
    groups.evaluator = Evaluator(cfg.eval, cfg.reward, r, groups.rollouts, groups.rewards, inputs.eval_prompts,
                                 inputs.eval_sets, total_steps=t.total_steps, progress=cfg.logging.progress,
                                 timeout_s=timeout, episodes=groups.episodes)
    bar.update()
    bar.close()
    groups.sync = WeightSync(cfg.sync, groups.trainer, groups.rollouts, cfg.sync.dir or os.path.join(run_dir, "sync"),
                             adapter=lora_sync_mode(cfg.model.lora, r) == "adapter",
                             nccl=bool(t.gpus_per_worker and r.gpus_per_engine), temperature=r.temperature,
                             timeout_s=timeout)
    return groups


def _run(cfg: Config, run_dir: str, status) -> dict:
    """Inputs and groups for the loop, and their clean-up."""
    import ray

    from rlvr.cluster.connect import connect
    from rlvr.config.cluster import custom_resources_needed, logical_cpus_needed
    from rlvr.config.critic import critic_ranks
    from rlvr.cluster.fit import check_fits
    from rlvr.cluster.logs import send_actor_output_to
    from rlvr.loop.control import stop_at_once_on_signals, stop_gracefully_on_signals, stop_request_in
    from rlvr.loop.loop import run_loop

    from rlvr.run.checkpoint import resume_point
    from rlvr.loop.notices import print_notices, startup_notices

    status.update(phase="model")
    inputs = prepare(cfg)
    inputs.resume = resume_point(cfg.checkpoint.resume, run_dir)  # a damaged checkpoint is skipped before any actor
    status.update(phase="actors")
    send_actor_output_to(None if cfg.logging.verbose else os.path.join(run_dir, "logs"))
    cpus = logical_cpus_needed(cfg.trainer, cfg.rollout, cfg.reward, critic_ranks(cfg.critic, cfg.algorithm, cfg.trainer))
    started_cluster = connect(cfg.cluster, cpus,
                              custom_resources_needed(cfg.trainer, cfg.rollout), verbose=cfg.logging.verbose)
    restore_signals = stop_at_once_on_signals()  # after ray.init, which installs its own
    print(f"[rlvr] starting {cfg.rollout.num_engines} {cfg.rollout.engine} engine(s), "
          f"{cfg.trainer.num_workers} {cfg.trainer.backend} trainer rank(s)"
          + (" and as many critic ranks" if critic_ranks(cfg.critic, cfg.algorithm, cfg.trainer) else "")
          + f", {cfg.reward.num_workers} reward worker(s)"
          + ("" if cfg.logging.verbose else f"; their output: {os.path.join(run_dir, 'logs')}/ (--verbose to show it)"),
          flush=True)
    groups = Groups()
    try:
        try:
            check_fits(cfg)  # a cluster too small for the recipe fails now, not after waiting forever
            start_groups(cfg, inputs, run_dir, groups)
        except Exception as e:
            stop = stop_request_in(e)  # SIGTERM / Ctrl-C while waiting in Ray: one clean stop
            raise (stop or e) from None
        print_notices(startup_notices(cfg, inputs.model_path, groups.trainer.notices()))  # once, in rlvr's words
        status.update(placement=groups.places(), **({"agent_url": groups.agent.url} if groups.agent else {}))
        restore_signals()
        restore_signals = stop_gracefully_on_signals(run_dir)
        return run_loop(cfg, run_dir, status, groups, inputs)
    finally:
        restore_signals()
        send_actor_output_to(None)
        groups.stop()
        if started_cluster:
            ray.shutdown()
