"""The RL loop: every remote step of a training step is one line of `run_loop`, in order.

    batch   = batches.next(step)          generate on the engines, score on the reward workers
    totals  = shaped rewards              (minus KL to the reference, from the trainer ranks, if in the reward)
    samples = advantages, kept samples    pure functions (`rlvr.loop.samples`, `rlvr.algos`)
      (PPO: critic_step)                  the critic ranks' values -> GAE -> the critic ranks' update
    trainer.train(samples)                the trainer ranks: one update (not during critic.warmup_steps)
    sync.push(version + 1)                trainer rank 0 -> every engine (and every few syncs, verify)
    evaluator.run()                       held-out evaluation, every `eval.every` steps
    run.step(...)                         metrics.jsonl, samples/, status.json, console
    between steps                         checkpoint every `checkpoint.every`, control requests

By default strictly on-policy: the engines always generate with the weights of the
previous update (the sync is part of every step). With `rollout.max_staleness: 1` the next
batch is generated in a background thread while the trainer trains on this one (one step
off-policy; every completion carries the weight version that generated it).

Each group owns its actors and their recovery: a dead engine or reward worker is replaced
inside the call that found it (`rlvr.rollout.group`, `rlvr.reward.group`, `rlvr.sync.group`).
A dead trainer rank fails the step; with `trainer.max_restarts` left the ranks are started
again and the run goes back to its latest complete checkpoint (`recover_trainer`), in this
process, and does the steps after it again.
"""

from __future__ import annotations

import os

import torch

from rlvr.cluster.remote import RemoteCallError
from rlvr.loop.samples import (build_samples, candidate_samples, gae_samples, mean_staleness, scored_samples,
                               shaped_rewards)


def run_loop(cfg, run_dir: str, status, groups, inputs) -> dict:
    """`groups`: the started actor groups (`rlvr.loop.train.Groups`); `inputs`: model and prompts."""
    from rlvr.run.reporter import RunReporter

    trainer, rollouts, sync, evaluator, algo = groups.trainer, groups.rollouts, groups.sync, groups.evaluator, cfg.algorithm
    critic = groups.critic  # PPO's value model (algorithm.advantage: gae), else None
    run = RunReporter(run_dir, status, cfg.logging, cfg.trainer.total_steps)
    batches = make_batches(cfg, groups, inputs)
    saver = Checkpoints(run_dir, cfg.checkpoint, groups, batches, run)
    step, stopped, probe = begin(cfg, run, saver, groups, inputs), None, (inputs.eval_prompts or inputs.train_prompts)[:4]
    while step < cfg.trainer.total_steps and stopped is None:
        step += 1
        timer = run.timer()
        try:
            with timer("step"):
                batch = batches.next(step, timer)  # generate on the engines, score on the reward workers
                rollouts.sleep()  # colocated on GPUs: the engines free their memory for the trainer
                stats = {**batch.metrics, "rollout/staleness": mean_staleness(batch.completions, sync.version)}
                totals = shaped_rewards(batch.completions, batch.rewards, algo, cfg.rollout.length_budget())
                if algo.kl.coef and algo.kl.where == "reward":
                    with timer("reference"):
                        kl = algo.kl.coef * torch.tensor(trainer.reference_kl(candidate_samples(batch.prompts,
                                                                                                batch.completions)))
                    totals, stats["reward/kl_penalty"] = totals - kl, kl.mean().item()
                if critic is None:
                    samples, sample_stats, advantages = build_samples(batch.prompts, batch.completions, totals, algo)
                else:  # PPO: the critic's values, GAE, the critic's update
                    samples, sample_stats, advantages = critic_step(critic, batch, totals, algo, timer)
                stats.update(sample_stats)
                if critic is not None and step <= cfg.critic.warmup_steps:
                    samples = []  # critic warm-up: the policy is frozen (no update, no sync)
                with timer("train"):
                    stats.update(trainer.train(samples))
                rollouts.wake_up()
                with timer("sync"):
                    if samples:  # no update happened otherwise: the engines already hold these weights
                        stats.update(sync.push(sync.version + 1))
                if samples and cfg.sync.verify_due(sync.version):
                    with timer("verify"):
                        stats["sync/verify_max_diff"] = sync.verify(probe)
            evals = {}
            if evaluator.due(step):
                run.phase("eval")
                evals = evaluator.run()  # held-out evaluation on the engines and reward workers
            run.step({"step": step, **stats, **timer.times, "weight_version": sync.version, **groups.faults(), **evals},
                     batch, advantages, places=groups.places)
            stopped = saver.between_steps(step)  # checkpoint every `checkpoint.every`, control requests
        except RemoteCallError as e:
            if not trainer.lost(e):
                raise
            step = recover_trainer(saver, groups, run)
    return finish(cfg, saver, batches, run, stopped)


def critic_step(critic, batch, totals, algo, timer):
    """PPO's critic part of a step; returns what `build_samples` does (samples, metrics, advantages)."""
    samples, owners = scored_samples(batch.prompts, batch.completions)
    with timer("values"):
        values = critic.values(samples)  # the critic ranks: V(s_t) of every completion token
    samples, stats, advantages = gae_samples(samples, owners, batch.completions, totals, values, algo)
    with timer("critic"):
        stats.update(critic.train(samples))  # the critic ranks: one update toward the returns
    return samples, stats, advantages


def make_batches(cfg, groups, inputs):
    from rlvr.data.prompts import PromptSampler
    from rlvr.eval.sets import primary_key
    from rlvr.loop.batches import Batches
    from rlvr.types import SamplingSpec

    r = cfg.rollout
    spec = SamplingSpec(n=r.n, max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                        ignore_eos=r.ignore_eos)
    sampler = PromptSampler(len(inputs.train_prompts), cfg.run.seed, cfg.data.shuffle)
    return Batches(groups.rollouts, groups.rewards, inputs.train_prompts, sampler, spec,
                   want=cfg.data.prompts_per_step, run_seed=cfg.run.seed, algo=cfg.algorithm, rollout_cfg=r,
                   max_failure_fraction=cfg.reward.max_failure_fraction, primary=primary_key(cfg.eval, cfg.reward),
                   total_steps=cfg.trainer.total_steps, episodes=groups.episodes)


def begin(cfg, run, saver, groups, inputs) -> int:
    """Before step 1: the engines join the weight sync; then the checkpoint `checkpoint.resume`
    names (`inputs.resume`, found and verified before any actor started) is restored, or the
    starting model is evaluated (step 0). Returns the step done."""
    run.status.update(state="running", phase="sync setup", step=0)
    groups.sync.setup()
    resume = inputs.resume
    saver.origin = resume
    if resume is not None:  # trainer state, the engines' weights, the prompt order, the metrics so far
        run.phase("resume")
        step = saver.restore(resume)
        run.open(resumed_at=step)
        print(f"[rlvr] resumed at step {step} (weight version {groups.sync.version}) from {resume}", flush=True)
        return step
    run.open()
    run.phase("eval")
    run.start({"step": 0, **inputs.skipped, **groups.evaluator.run()})
    return 0


def recover_trainer(saver, groups, run) -> int:
    """A trainer rank died (and `trainer.max_restarts` allows it): start the ranks again, go back
    to the latest complete checkpoint (the one the run started from, or the start), and
    return its step; the metrics rows after it are dropped (those steps are done again)."""
    groups.trainer.restart()
    groups.sync.setup()
    path = saver.latest()
    step = saver.restore(path)
    run.rewind(step)
    print(f"[rlvr] fault: continuing from step {step} ({path or 'the starting model'})", flush=True)
    return step


class Checkpoints:
    """Saving, restoring and finding a run's checkpoints, and what happens between steps."""

    def __init__(self, run_dir: str, cfg, groups, batches, run):
        from rlvr.run.control import ControlInbox, process_start_ns

        self.run_dir, self.cfg, self.groups, self.batches, self.run = run_dir, cfg, groups, batches, run
        self.inbox = ControlInbox(run_dir, since_ns=process_start_ns())  # not requests left for an earlier driver
        self.origin: str | None = None  # the checkpoint the run started from (checkpoint.resume)

    def save(self, step: int, name: str) -> str:
        from rlvr.run.checkpoint import prune_checkpoints
        from rlvr.run.status import checkpoint_names

        self.run.phase("checkpoint")
        sampler, files = self.batches.state()
        run_state = {"step": step, "weight_version": self.groups.sync.version, "sampler": sampler}
        critic = (self.groups.critic,) if self.groups.critic is not None else ()  # its part: <checkpoint>/critic/
        path = self.groups.trainer.save_checkpoint(os.path.join(self.run_dir, "checkpoints", name), run_state, files,
                                                   parts=critic)
        prune_checkpoints(self.run_dir, self.cfg.keep_last)
        self.run.checkpoints(checkpoint_names(self.run_dir))
        return path

    def restore(self, path: str | None) -> int:
        """Trainer state, prompt order (and an async run's batch in flight) and the engines'
        weights as `path` left them (None: as the run started); returns its step."""
        state = self.groups.trainer.load_checkpoint(path) if path else {"step": 0, "weight_version": 0, "sampler": None}
        if path and self.groups.critic is not None:
            self.groups.critic.load_checkpoint(path)
        self.batches.restore(state["sampler"], path)
        self.groups.sync.push(state["weight_version"])
        return state["step"]

    def latest(self) -> str | None:
        from rlvr.run.checkpoint import find_resume_point

        return find_resume_point(self.run_dir) or self.origin

    def between_steps(self, step: int) -> int | None:
        """A step checkpoint when one is due, then the control requests; returns `step` to stop."""
        from rlvr.loop.control import obey_control

        if self.cfg.every and step % self.cfg.every == 0 and step < self.run.total_steps:
            self.save(step, f"step_{step:06d}")
        if obey_control(self.inbox, self.run.status, lambda: self.save(step, f"step_{step:06d}")):
            print(f"[rlvr] stopped by request after step {step}", flush=True)
            return step
        return None


def finish(cfg, saver, batches, run, stopped: int | None) -> dict:
    batches.close()
    run.close()
    final = None
    if cfg.checkpoint.save_final or stopped is not None:
        final = saver.save(stopped or cfg.trainer.total_steps, "final")
        print(f"[rlvr] saved final checkpoint (HF format): {final}", flush=True)
    return {"run_dir": saver.run_dir, "first_eval": run.first, "history": run.history, "checkpoint": final,
            "stopped_at": stopped}
