"""The driver: one loop, read top to bottom, with every remote call visible.

    for each step:
        sample prompts -> generate (engines) -> score (reward workers)
        -> advantages (pure function) -> train (trainer ranks)
        -> push weights (trainer rank 0 -> engines) -> log / evaluate

By default strictly on-policy: the engines always generate with the weights of
the previous update (the sync is part of every step), so `old_logp` equals the
current policy's log-probs at the first update of each step. With
`rollout.max_staleness: 1` the next batch is generated in a background thread
while the trainer trains on this one (one step off-policy; every completion
carries the weight version that generated it, `rollout/staleness` is logged).

Weights (LoRA: merged, or the adapter alone, `model.lora.sync`) reach the engines through
`sync.method` (`rlvr.weight_sync`: broadcast, ipc or disk, in buckets), are checksummed on
arrival, and every few syncs (`sync.verify`) a probe compares the engines' log-probs with the trainer's.

The run reports itself through its folder (see `rlvr.runstate`): `status.json`
(state, step, phase, heartbeat), `metrics.jsonl`, `samples/`, `checkpoints/`.
Between steps it takes control requests (`control/`, written by the status
API): pause, resume, checkpoint now, stop (with a final checkpoint).
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor

from rlvr import evalsets, plots
from rlvr.config import Config, to_yaml
from rlvr.launch import drop_prompts_too_long, model_max_len, start_service, stop_gracefully_on_signals
from rlvr.metrics import MetricsLogger, Timer, phase_bar, progress_bar, report_step
from rlvr.recovery import Recovery, actor_places, start_reward_worker
from rlvr.types import Completion, RewardInput, SamplingSpec


def prepare_model(cfg: Config) -> str:
    """The model folder (or hub id) the run starts from; builds the built-in tiny model once."""
    from rlvr.config import BUILTIN_TINY_MODEL

    if cfg.model.path != BUILTIN_TINY_MODEL:
        return os.path.expanduser(cfg.model.path)
    from rlvr.tiny import ensure_tiny_model

    return ensure_tiny_model(cfg.model, cfg.data.arithmetic, progress=cfg.logging.progress)


def train(cfg: Config) -> dict:
    """Run `cfg.trainer.total_steps` RL steps; returns a summary of the run."""
    from rlvr import cluster
    from rlvr.runstate import RunStatus

    run_dir = os.path.join(cfg.run.output_dir, cfg.run.name)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "recipe.yaml"), "w") as f:
        f.write(to_yaml(cfg))
    status = RunStatus(run_dir, cfg.run.name, cfg.trainer.total_steps, heartbeat_s=cfg.service.heartbeat_s,
                       ray_job_id=cluster.job_submission_id())
    status.start_heartbeat()
    server = None
    try:
        server = start_service(cfg, status)  # a busy port fails here, before any actor starts
        summary = _run(cfg, run_dir, status)
    except BaseException as e:
        status.close("failed", error=f"{type(e).__name__}: {e}"[:2000])
        raise
    finally:
        if server is not None:
            server.stop()
    status.close("stopped" if summary["stopped_at"] is not None else "completed")
    summary["plots"] = plots.plot_run_safely(run_dir) if cfg.logging.plots else []
    return summary


def _run(cfg: Config, run_dir: str, status) -> dict:
    """Model, data and actors for the loop, and their clean-up."""
    import ray

    from rlvr import cluster
    from rlvr.data import PromptSampler, load_train_and_eval
    from rlvr.placement import create_placement_group
    from rlvr.rollout.actors import create_engines
    from rlvr.trainer.group import create_trainers

    # ---- data and model (local, before any actor starts)
    status.update(phase="model")
    model_path = prepare_model(cfg)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_prompts, eval_prompts = load_train_and_eval(cfg.data, tokenizer)
    train_prompts, eval_prompts, skipped = drop_prompts_too_long(cfg, model_path, train_prompts, eval_prompts)
    eval_prompts, eval_sets = eval_prompts[: cfg.eval.num_prompts], evalsets.prepare(cfg, tokenizer, model_max_len(cfg, model_path))
    sampler = PromptSampler(len(train_prompts), cfg.run.seed, cfg.data.shuffle)

    # ---- actors
    status.update(phase="actors")
    started_cluster = cluster.connect(cfg)
    restore_signals = stop_gracefully_on_signals(run_dir)  # after ray.init, which installs its own
    env = cluster.runtime_env_for_actors(cfg.model.cache_dir)
    print(f"[rlvr] starting {cfg.rollout.num_engines} {cfg.rollout.engine} engine(s), "
          f"{cfg.trainer.num_workers} {cfg.trainer.backend} trainer rank(s), {cfg.reward.num_workers} reward worker(s)", flush=True)
    actors: dict = {"engines": [], "trainers": [], "rewarders": [], "eval_workers": [], "pg": None}
    try:
        actors["pg"] = create_placement_group(cfg)
        colocate = actors["pg"] if cfg.cluster.placement == "colocate" else None
        bar = phase_bar(cfg, 3, "starting engines, trainers, reward workers", unit="group")
        actors["engines"] = create_engines(cfg.rollout, model_path, cfg.run.seed, cfg.model.dtype, colocate_pg=colocate,
                                           lora=cfg.model.lora)
        bar.update()
        actors["trainers"], _ = create_trainers(cfg.trainer, cfg.algorithm, model_path, cfg.run.seed, actors["pg"],
                                                runtime_env=env, temperature=cfg.rollout.temperature,
                                                norm_tokens=cfg.rollout.max_tokens, lora=cfg.model.lora)
        bar.update()
        actors["rewarders"] = [start_reward_worker(cfg) for _ in range(cfg.reward.num_workers)]
        ray.get([w.ping.remote() for w in actors["rewarders"]])
        actors["eval_workers"] = evalsets.start_workers(cfg, eval_sets)  # eval.sets with their own verifiers
        bar.update()
        bar.close()
        status.update(placement={k: actor_places(actors[k]) for k in ("trainers", "engines", "rewarders")})
        recovery = Recovery(cfg, run_dir, model_path, colocate, **{k: actors[k] for k in ("engines", "trainers", "rewarders")})
        recovery.on_replaced = lambda kind, handles: status.update(
            placement={**status.snapshot()["placement"], kind: actor_places(handles)})
        return _loop(cfg, run_dir, status, train_prompts, (eval_prompts, eval_sets), sampler, recovery, skipped,
                     **{k: actors[k] for k in ("engines", "trainers", "rewarders")})
    finally:
        restore_signals()
        _stop(actors)
        if started_cluster:
            ray.shutdown()


def _stop(actors: dict) -> None:
    """Kill this run's actors and free its placement group (the cluster may outlive the run)."""
    import ray
    from ray.util.placement_group import remove_placement_group

    for w in actors["rewarders"] + actors["eval_workers"]:
        try:
            ray.get(w.shutdown.remote(), timeout=30)
        except Exception:
            pass
    for handle in actors["engines"] + actors["trainers"] + actors["rewarders"] + actors["eval_workers"]:
        ray.kill(handle)
    if actors["pg"] is not None:
        remove_placement_group(actors["pg"])


def _loop(cfg: Config, run_dir: str, status, train_prompts, eval_prompts, sampler, recovery: Recovery,
          skipped: dict, engines, trainers, rewarders) -> dict:
    """The RL loop proper: every remote call of a step happens here, in order."""
    import torch
    eval_prompts, eval_sets = eval_prompts  # the main held-out prompts, the named eval.sets

    from rlvr import rollouts
    from rlvr.checkpoint import list_checkpoints, prune_checkpoints, resume_point
    from rlvr.runstate import ControlInbox, process_start_ns, write_samples
    from rlvr.remote import wait_all

    inbox = ControlInbox(run_dir, since_ns=process_start_ns())  # not requests left for an earlier driver
    spec = SamplingSpec(n=cfg.rollout.n, max_tokens=cfg.rollout.max_tokens, temperature=cfg.rollout.temperature,
                        top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k, ignore_eos=cfg.rollout.ignore_eos)
    eval_spec = SamplingSpec(n=1, max_tokens=cfg.eval.max_tokens or cfg.rollout.max_tokens, temperature=0.0)
    version, history, progress, failures, stopped_at = 0, [], progress_bar(cfg), {}, None
    colocate = cfg.cluster.placement == "colocate"
    probe = (eval_prompts or train_prompts)[:4]
    next_prompts = lambda k: [train_prompts[i] for i in sampler.next_batch(k)]  # noqa: E731
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout") if cfg.rollout.max_staleness else None

    consumed = {"sampler": sampler.state_dict()}  # the sampler before the batch in flight (what a checkpoint keeps)

    def rollout_in_background(step: int):
        """max_staleness 1: the next batch is generated (with the engines' current weights)
        while the trainer trains on this one. A checkpoint keeps the sampler as it was before
        this batch, so a resumed run generates it again (with the checkpoint's weights)."""
        consumed["sampler"] = sampler.state_dict()
        timer = Timer()
        step_spec = dataclasses.replace(spec, seed=rollouts.step_seed(cfg.run.seed, step))
        return background.submit(lambda: (collect_rollouts(engines, rewarders, next_prompts, step_spec, cfg, timer,
                                                           recovery), timer))

    def checkpoint(step: int, name: str) -> str:
        status.update(phase="checkpoint")
        path = save_checkpoint(trainers, os.path.join(run_dir, "checkpoints", name),
                               {"step": step, "weight_version": version,
                                "sampler": consumed["sampler"] if background else sampler.state_dict()},
                               cfg.cluster.rpc_timeout_s)
        status.update(checkpoints=[os.path.relpath(p, run_dir) for _, p in list_checkpoints(run_dir)])
        prune_checkpoints(run_dir, cfg.checkpoint.keep_last)
        return path

    start, first_eval = 0, {}
    status.update(state="running", phase="sync setup", step=0)
    setup_weight_sync(trainers, engines, cfg, run_dir)
    resume = resume_point(cfg, run_dir)
    if resume is not None:  # trainer state, the engines' weights, the prompt order, the metrics so far
        status.update(phase="resume")
        run_state = load_checkpoint(trainers, resume, cfg.cluster.rpc_timeout_s)
        start, version = run_state["step"], run_state["weight_version"]
        sampler.load_state_dict(run_state["sampler"])
        sync_weights(trainers, engines, version, cfg)
        recovery.version = version
        logger = MetricsLogger(run_dir, append=True, keep_until_step=start, logging_cfg=cfg.logging)
        print(f"[rlvr] resumed at step {start} (weight version {version}) from {resume}", flush=True)
    else:
        logger = MetricsLogger(run_dir, logging_cfg=cfg.logging)
        status.update(phase="eval")
        first_eval = evaluate(engines, rewarders, eval_prompts, eval_spec, cfg, recovery, eval_sets)
        logger.log({"step": 0, **skipped, **first_eval})
        if first_eval:
            print(f"[rlvr] step 0 eval/accuracy {first_eval['eval/accuracy']:.3f}", flush=True)
    if progress is not None:
        progress.update(start)
    pending = rollout_in_background(start + 1) if background and start < cfg.trainer.total_steps else None
    for step in range(start + 1, cfg.trainer.total_steps + 1):
        timer = Timer(on_phase=lambda phase: status.update(phase=phase))
        with timer("step"):
            if pending is not None:
                with timer("wait_rollout"):
                    rollout, rollout_timer = pending.result()
                timer.times.update(rollout_timer.times)  # generate/reward ran during the previous step
                pending = rollout_in_background(step + 1) if step < cfg.trainer.total_steps else None
            else:
                step_spec = dataclasses.replace(spec, seed=rollouts.step_seed(cfg.run.seed, step))
                rollout = collect_rollouts(engines, rewarders, next_prompts, step_spec, cfg, timer, recovery)
            prompts, completions, rewards = rollout["prompts"], rollout["completions"], rollout["rewards"]
            rollout["metrics"]["rollout/staleness"] = rollouts.mean_staleness(completions, version)
            if colocate:
                wait_all([e.sleep.remote() for e in engines], "engine sleep", cfg.cluster.rpc_timeout_s)  # GPU: free it
            totals = rollouts.shaped_rewards(completions, rewards, cfg)
            if cfg.algorithm.kl.coef and cfg.algorithm.kl.where == "reward":
                with timer("reference"):
                    kl = torch.tensor(reference_kl(trainers, rollouts.candidate_samples(prompts, completions), cfg))
                totals = totals - cfg.algorithm.kl.coef * kl
                rollout["metrics"]["reward/kl_penalty"] = (cfg.algorithm.kl.coef * kl).mean().item()
            samples, sample_stats, advantages = rollouts.build_samples(prompts, completions, totals, cfg)
            batch_stats = {**rollout["metrics"], **sample_stats}
            with timer("train"):
                train_stats = train_step(trainers, samples, cfg)
            if colocate:
                wait_all([e.wake_up.remote() for e in engines], "engine wake_up", cfg.cluster.rpc_timeout_s)
            with timer("sync"), recovery.lock:
                if samples:  # no update happened otherwise: the engines already hold these weights
                    version += 1
                    batch_stats.update(sync_weights(trainers, engines, version, cfg))
                    recovery.version = version
            if samples and rollouts.verify_due(cfg.sync, version):
                with timer("verify"):
                    batch_stats["sync/verify_max_diff"] = verify_weights(trainers, engines, probe, version, cfg)

        metrics = {"step": step, **batch_stats, **train_stats, **timer.times, "weight_version": version,
                   **recovery.faults}
        if step == cfg.trainer.total_steps or (cfg.eval.every and step % cfg.eval.every == 0):  # 0: start and end only
            status.update(phase="eval")
            metrics.update(evaluate(engines, rewarders, eval_prompts, eval_spec, cfg, recovery, eval_sets))
        logger.log(metrics)
        if cfg.logging.samples_per_step:
            write_samples(run_dir, step, rollouts.sample_records(step, prompts, completions, rewards, advantages,
                                                                 cfg.logging.samples_per_step))
        for key in (k for r in rewards for k in r.failures):
            failures[key] = failures.get(key, 0) + 1
        status.update(step=step, weight_version=version, latest_metrics=metrics, reward_failures=failures,
                      last_step_timings={k: v for k, v in metrics.items() if k.startswith("timing/")})
        history.append(metrics)
        report_step(progress, metrics, completions, prompts, cfg)
        if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step < cfg.trainer.total_steps:
            checkpoint(step, f"step_{step:06d}")
        if _obey_control(inbox, status, lambda: checkpoint(step, f"step_{step:06d}")):
            stopped_at = step
            print(f"[rlvr] stopped by request after step {step}", flush=True)
            break

    if background is not None:
        background.shutdown(wait=True)  # a batch still generating when the run stops early
    progress.close() if progress else None
    final = None
    if cfg.checkpoint.save_final or stopped_at is not None:
        final = checkpoint(stopped_at or cfg.trainer.total_steps, "final")
        print(f"[rlvr] saved final checkpoint (HF format): {final}", flush=True)
    logger.close()
    return {"run_dir": run_dir, "first_eval": first_eval, "history": history, "checkpoint": final,
            "stopped_at": stopped_at}


def _obey_control(inbox, status, checkpoint_now) -> bool:
    """Carry out the control requests that arrived during the step; while paused, wait
    for `resume` (checkpoints and stop still work). Returns True to stop the run."""
    paused = False
    while True:
        for action in inbox.take():
            print(f"[rlvr] control: {action}", flush=True)
            status.update(control=action)
            if action == "stop":
                return True
            if action == "checkpoint":
                checkpoint_now()
            paused = {"pause": True, "resume": False}.get(action, paused)
            status.update(state="paused" if paused else "running", phase="paused" if paused else "between steps")
        if not paused:
            return False
        time.sleep(0.5)


# --------------------------------------------------------------------------- the remote calls


def collect_rollouts(engines, rewarders, next_prompts, spec: SamplingSpec, cfg: Config, timer: Timer,
                     recover: Recovery | None = None) -> dict:
    """Generate and score a step's batch. With DAPO's dynamic sampling, groups whose
    rewards are all equal are dropped and more prompts are sampled, for at most
    `max_rounds` extra rounds, until `data.prompts_per_step` groups are kept."""
    from rlvr import rollouts

    want, ds = cfg.data.prompts_per_step, cfg.algorithm.dynamic_sampling
    kept = {"prompts": [], "completions": [], "rewards": []}
    seen_c, seen_r, rounds, dropped = [], [], 0, 0
    while True:
        prompts = next_prompts(want)
        round_spec = spec if spec.seed is None else dataclasses.replace(spec, seed=spec.seed + rounds * 1_000_003)
        completions, rewards = generate_and_score(engines, rewarders, prompts, round_spec,
                                                  cfg.rollout.chunks_per_engine, timer, cfg.cluster.rpc_timeout_s,
                                                  recover)
        check_reward_failures(rewards, completions, cfg)
        rounds += 1
        seen_c += completions
        seen_r += rewards
        if not ds.enabled:
            kept = {"prompts": prompts, "completions": completions, "rewards": rewards}
            break
        p, c, r, d = rollouts.keep_informative_groups(prompts, completions, rewards, want - len(kept["prompts"]))
        for c_ in c:
            c_.prompt_index += len(kept["prompts"])
        kept["prompts"] += p
        kept["completions"] += c
        kept["rewards"] += r
        dropped += d
        if len(kept["prompts"]) >= want or rounds > ds.max_rounds:
            break
    metrics = rollouts.batch_metrics(seen_c, seen_r, evalsets.primary_key(cfg))  # everything generated, not just kept
    if ds.enabled:
        metrics.update({"dynamic_sampling/rounds": rounds, "dynamic_sampling/dropped_groups": dropped,
                        "dynamic_sampling/kept_groups": len(kept["prompts"])})
    return {**kept, "metrics": metrics}


class RewardFailureError(RuntimeError):
    """A verifier failed on too much of a batch: a broken plugin must not train silently."""


def check_reward_failures(rewards, completions: list[Completion], cfg: Config) -> None:
    """Print one example per failing verifier; stop the run past `reward.max_failure_fraction`."""
    from rlvr.reward.pool import failure_report

    for key, (count, example) in failure_report(rewards, [c.text for c in completions]).items():
        fraction = count / max(1, len(rewards))
        print(f"[rlvr] reward: verifier {key!r} failed on {count}/{len(rewards)} samples, e.g. {example}", flush=True)
        if fraction > cfg.reward.max_failure_fraction:
            raise RewardFailureError(
                f"verifier {key!r} failed on {fraction:.0%} of the batch (> reward.max_failure_fraction="
                f"{cfg.reward.max_failure_fraction}); e.g. {example}")


def generate(engines, prompt_ids: list[list[int]], spec: SamplingSpec) -> list[Completion]:
    """Shard prompts over the engines (groups stay whole); completions come back in prompt order."""
    import ray

    from rlvr.rollout.actors import split_evenly
    from rlvr.rollouts import merge_shards

    shards = split_evenly(prompt_ids, len(engines))
    return merge_shards(ray.get([e.generate.remote(s, spec) for e, s in zip(engines, shards) if s]), shards)


def score_async(rewarders, prompts, completions: list[Completion]) -> list:
    """Start scoring `completions`, split over the reward workers; returns, in order, one
    `(worker index, inputs, result ref)` per non-empty share."""
    from rlvr.rollout.actors import split_evenly

    inputs = [RewardInput(prompts[c.prompt_index].text, c.text, prompts[c.prompt_index].answer,
                          prompts[c.prompt_index].metadata) for c in completions]
    return [(i, share, rewarders[i].score.remote(share))
            for i, share in enumerate(split_evenly(inputs, len(rewarders))) if share]


def generate_and_score(engines, rewarders, prompts, spec: SamplingSpec, chunks_per_engine: int, timer: Timer,
                       timeout_s: float = 1800.0, recover=None):
    """Generate on every engine in `chunks_per_engine` calls each and send each chunk to the
    reward workers the moment it comes back, so scoring overlaps the generation still
    running. `timing/generate` ends when the last chunk is generated; `timing/reward` is
    the scoring left after that (what the step waits for). Returns (completions,
    rewards) in prompt order.

    With `recover` (see `Recovery`), an engine or reward worker that dies is replaced
    and its chunk is generated (or scored) again; otherwise, and for any other error or a
    call still running after `timeout_s`, a RemoteCallError names the call."""
    import ray

    from rlvr.remote import RemoteCallError, wait_all
    from rlvr.rollout.actors import split_evenly
    from rlvr.rollouts import merge_shards

    chunks = split_evenly(prompts, len(engines) * chunks_per_engine)  # engine e gets chunks e*c .. e*c+c-1
    starts = [sum(len(c) for c in chunks[:j]) for j in range(len(chunks))]  # seeds follow the prompt index

    def start_chunk(j: int):
        chunk_spec = spec if spec.seed is None else dataclasses.replace(spec, seed=spec.seed + starts[j])
        return engines[j // chunks_per_engine].generate.remote([p.token_ids for p in chunks[j]], chunk_spec)

    deadline = time.monotonic() + timeout_s
    with timer("generate"):
        generating = {start_chunk(j): j for j, chunk in enumerate(chunks) if chunk}
        generated, scoring = {}, {}
        while generating:
            ready, _ = ray.wait(list(generating), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RemoteCallError(f"generate: {len(generating)} chunk(s) did not finish within {timeout_s:g} s "
                                      "(cluster.rpc_timeout_s)")
            j = generating.pop(ready[0])
            try:
                generated[j] = ray.get(ready[0])
            except ray.exceptions.ActorDiedError as e:
                if recover is None:
                    raise RemoteCallError(f"generate on engine {j // chunks_per_engine} failed: {e}") from e
                recover.engine(j // chunks_per_engine, e)  # replaced in `engines`, weights synced
                generating[start_chunk(j)] = j  # the same prompts, the same seeds
                continue
            scoring[j] = score_async(rewarders, chunks[j], generated[j])
    with timer("reward"):
        order = sorted(generated)
        rewards = []
        for j in order:
            for worker, share, ref in scoring[j]:
                try:
                    rewards += wait_all([ref], f"score on reward worker {worker}", max(1.0, deadline - time.monotonic()))[0]
                except RemoteCallError as e:
                    if recover is None or not isinstance(e.__cause__, ray.exceptions.ActorDiedError):
                        raise
                    retry = recover.rewarder(worker, e.__cause__)  # another live worker, or the replacement
                    rewards += wait_all([rewarders[retry].score.remote(share)], f"score on reward worker {retry}",
                                        timeout_s)[0]
    completions = merge_shards([generated[j] for j in order], [chunks[j] for j in order])
    return completions, rewards


def train_step(trainers, samples, cfg: Config) -> dict:
    """One update on all ranks at once; a step with nothing to learn from trains nothing."""
    from rlvr.remote import wait_all
    from rlvr.rollouts import loss_denominator, reduce_train_stats
    from rlvr.trainer.batch import num_micro_batches, shard_for_ranks

    if not samples:
        return {"loss": 0.0, "grad_norm": 0.0}
    shards = shard_for_ranks(samples, len(trainers))
    denominator = loss_denominator(samples, cfg.algorithm.aggregation)
    micro = num_micro_batches(shards, cfg.trainer.micro_batch_size)
    refs = [w.train_step.remote(s, denominator, micro) for w, s in zip(trainers, shards)]
    return reduce_train_stats(wait_all(refs, "train_step on the trainer ranks", cfg.cluster.rpc_timeout_s))


def reference_kl(trainers, samples, cfg: Config) -> list[float]:
    """Per-sample KL(policy || reference) summed over the completion, in sample order."""
    return _per_sample(trainers, "kl_to_reference", samples, cfg)


def _per_sample(trainers, method: str, samples, cfg: Config) -> list:
    """A collective per-sample trainer call (`kl_to_reference`, `probe_logprobs`): the
    samples are split over the ranks; results come back in sample order."""
    from rlvr.remote import wait_all
    from rlvr.trainer.batch import num_micro_batches, shard_for_ranks

    shards = shard_for_ranks(samples, len(trainers))
    micro = num_micro_batches(shards, cfg.trainer.micro_batch_size)
    parts = wait_all([getattr(w, method).remote(s, micro) for w, s in zip(trainers, shards)],
                     f"{method} on the trainer ranks", cfg.cluster.rpc_timeout_s)
    return [x for part in parts for x in part]  # shard_for_ranks splits into contiguous shards


def setup_weight_sync(trainers, engines, cfg: Config, run_dir: str) -> None:
    """Every engine joins trainer rank 0's sending end of `sync.method` (see
    `rlvr.weight_sync`); the weight layout (names, shapes, dtypes) is fixed here: full
    weights, or with `model.lora.sync` resolving to "adapter" the LoRA adapter alone.
    Called again after an engine is replaced (a broadcast group is rebuilt whole)."""
    import ray

    from rlvr.remote import wait_all
    from rlvr.trainer.lora import sync_mode

    t, adapter = cfg.cluster.rpc_timeout_s, sync_mode(cfg.model.lora, cfg.rollout) == "adapter"
    metas = wait_all([w.weight_metas.remote(adapter) for w in trainers], "weight_metas on the trainer ranks", t)[0]
    method, bucket = cfg.sync.method, int(cfg.sync.bucket_mb * 2**20)
    folder = os.path.abspath(cfg.sync.dir or os.path.join(run_dir, "sync"))
    common = {"verify": cfg.sync.verify != "off"}  # checksums on both ends
    peft = ray.get(trainers[0].adapter_config.remote()) if adapter else None  # engines serve it with this config
    mine = [{**common, "adapter": peft, "adapter_dir": os.path.join(folder, f"adapter-engine{i}")}
            for i in range(len(engines))]
    if method == "broadcast":
        host, port = ray.get(trainers[0].rendezvous_address.remote())
        world = 1 + len(engines)
        backend = "nccl" if cfg.trainer.gpus_per_worker and cfg.rollout.gpus_per_engine else "gloo"
        refs = ([trainers[0].join_sync_group.remote(method, metas, bucket, host, port, world, backend, adapter=adapter,
                                                    **common)]
                + [e.join_sync_group.remote(method, metas, bucket, host, port, i + 1, world, backend, **mine[i])
                   for i, e in enumerate(engines)])
    else:
        refs = ([trainers[0].join_sync_group.remote(method, metas, bucket, folder=folder, **common, adapter=adapter)]
                + [e.join_sync_group.remote(method, metas, bucket, **mine[i]) for i, e in enumerate(engines)])
    wait_all(refs, f"joining the {method} weight-sync group", t)


def sync_weights(trainers, engines, version: int, cfg: Config) -> dict:
    """Trainer rank 0's full weights (gathered from all ranks) into every engine, bucket by
    bucket; every engine must end up with exactly the bytes sent (checksums compared)."""
    from rlvr.remote import wait_all
    from rlvr.weight_sync import WeightSyncError

    t, what = cfg.cluster.rpc_timeout_s, f"weight sync ({cfg.sync.method}, version {version})"
    pushes = [w.push_weights.remote(version) for w in trainers]
    if cfg.sync.method == "broadcast":  # senders and receivers meet in the collective
        pulls = [e.receive_weights.remote(None, version) for e in engines]
        results = wait_all(pushes + pulls, what, t)
        manifest, received = results[0], results[len(pushes):]
    else:  # the engines read what rank 0 wrote (files, shared memory, IPC handles)
        manifest = wait_all(pushes[:1], what, t)[0]
        pulls = [e.receive_weights.remote(manifest, version) for e in engines]
        received = wait_all(pulls + pushes[1:], what, t)[: len(pulls)]
    if cfg.sync.method == "ipc":
        wait_all([trainers[0].release_weights.remote(version)], what, t)
    for i, got in enumerate(received):
        if manifest["checksum"] is not None and got["checksum"] != manifest["checksum"]:
            raise WeightSyncError(f"engine {i} received different bytes than trainer rank 0 sent for weight "
                                  f"version {version} (sync.method={cfg.sync.method})")
    return {"sync/bytes": manifest["bytes"], "sync/buckets": manifest["buckets"],
            "sync/engine_load_s": max(got["seconds"] for got in received)}


def verify_weights(trainers, engines, probe_prompts, version: int, cfg: Config) -> float:
    """Each engine samples a few probe completions; the trainer scores the same tokens.
    Equal weights give equal log-probs: a difference above `sync.verify_tol` means an
    engine is not running the trainer's weights. Returns the largest difference."""
    import ray

    from rlvr.trainer.batch import TrainSample
    from rlvr.weight_sync import WeightSyncError

    spec = SamplingSpec(n=1, max_tokens=8, temperature=cfg.rollout.temperature, seed=version)
    worst = 0.0
    outputs = ray.get([e.generate.remote([p.token_ids for p in probe_prompts], spec) for e in engines])
    for i, completions in enumerate(outputs):
        samples = [TrainSample(probe_prompts[c.prompt_index].token_ids, c.token_ids, 0.0, c.logprobs)
                   for c in completions if c.token_ids]
        trainer_logprobs = _per_sample(trainers, "probe_logprobs", samples, cfg)
        diff = max((abs(a - b) for s, lp in zip(samples, trainer_logprobs) for a, b in zip(s.rollout_logprobs, lp)),
                   default=0.0)
        if diff > cfg.sync.verify_tol:
            raise WeightSyncError(f"engine {i} is not running the trainer's weights (version {version}): its "
                                  f"log-probs differ from the trainer's by up to {diff:.3g} (> sync.verify_tol="
                                  f"{cfg.sync.verify_tol:g})")
        worst = max(worst, diff)
    return worst


def evaluate(engines, rewarders, eval_prompts, eval_spec: SamplingSpec, cfg: Config,
             recover: Recovery | None = None, sets=()) -> dict:
    """Greedy generation on the held-out prompts, scored by the reward workers; then the
    named `eval.sets` (rlvr.evalsets), each with its own verifiers and sampling."""
    out, t0 = {}, time.perf_counter()
    bar = phase_bar(cfg, len(eval_prompts) + sum(len(s.prompts) for s in sets), "eval", unit="prompt")
    if eval_prompts:
        completions, results = generate_and_score(engines, rewarders, eval_prompts, eval_spec,
                                                  cfg.rollout.chunks_per_engine, Timer(), cfg.cluster.rpc_timeout_s,
                                                  recover)
        out = {**evalsets.main_metrics(results, completions, cfg), "timing/eval": time.perf_counter() - t0}
        bar.update(len(eval_prompts))
    out.update(evalsets.run_sets(sets, engines, rewarders, cfg, generate_and_score, recover, on_done=bar.update))
    bar.close()
    return out


def save_checkpoint(trainers, path: str, run_state: dict, timeout_s: float = 1800.0) -> str:
    """Every rank writes its part into `<path>.tmp`; rank 0 seals it (manifest, rename)."""
    from rlvr.remote import wait_all

    tmp = f"{path}.tmp"
    wait_all([w.save_checkpoint.remote(tmp) for w in trainers], "save_checkpoint on the trainer ranks", timeout_s)
    return wait_all([trainers[0].finalize_checkpoint.remote(tmp, path, run_state)], "sealing the checkpoint",
                    timeout_s)[0]


def load_checkpoint(trainers, path: str, timeout_s: float = 1800.0) -> dict:
    """Restore every rank from a checkpoint; returns its run state (step, sampler, ...)."""
    import json

    from rlvr.remote import wait_all

    wait_all([w.load_checkpoint.remote(path) for w in trainers], "load_checkpoint on the trainer ranks", timeout_s)
    with open(os.path.join(path, "rlvr_state.json")) as f:
        return json.load(f)
