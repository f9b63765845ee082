"""`rlvr sft RECIPE`: supervised fine-tuning through the RL trainer group.

    rows    = load_sft_samples(sft.train_path)    conversations, loss mask on the assistant's tokens
    trainer = TrainerGroup(trainer, nll)          the same ranks, backends (FSDP2 / ZeRO), LoRA
    loop:   trainer.train(next batch_size rows)   one optimizer update per step
            eval/loss on the held-out rows        every `sft.eval_every` steps, step 0 and the end
            run.step(...)                         metrics.jsonl, status.json, console
            checkpoint every `checkpoint.every`, control requests (pause / checkpoint / stop)
    final checkpoint                              an HF model folder: `model.path` of `rlvr train`

Nothing here is SFT-specific math: every row is a `TrainSample` with advantage 1 and the
`nll` policy loss (`rlvr.algos.nll_loss`, -A * logp) with `token_mean` aggregation, so the
trainer's own global normaliser makes the step's loss the exact token-mean cross-entropy
over every rank and micro-batch. Checkpoints are `rlvr train`'s (`rlvr.run.checkpoint`):
`checkpoint.resume=auto` continues a run at the step, sampler position and optimizer state
it saved. With LoRA the final checkpoint is the adapter (as for `rlvr train`), and the
merged model is written beside it (`<run>/merged`) for `model.path`.

Not here (yet): sequence packing (the trainer pads each micro-batch), held-out *accuracy*
during SFT (it needs engines and verifiers: run `rlvr eval` on the result).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

from rlvr.config import AlgorithmConfig, Config, RecipeError

# SFT as the trainer sees it: -logp on the loss tokens, divided by the batch's loss-token count
SFT_ALGORITHM = AlgorithmConfig(loss="nll", aggregation="token_mean", skip_uniform_groups=False)


@dataclass
class SFTData:
    """What `rlvr sft` trains on, prepared before any actor starts."""

    model_path: str
    train: list
    held_out: list
    skipped: int  # rows over sft.max_length, dropped
    steps: int


def prepare_sft(cfg: Config) -> SFTData:
    """The model folder and the rendered rows (a bad row fails here naming its file and line)."""
    s = cfg.sft
    s.check_for_sft(cfg.trainer)
    from transformers import AutoTokenizer

    from rlvr.data.prompts import has_chat_template, template_kwargs
    from rlvr.data.sft import load_sft_samples
    from rlvr.loop.train import model_folder

    model_path = model_folder(cfg.model, cfg.data, cfg.logging.progress)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if not has_chat_template(tokenizer):
        raise RecipeError("model.path", f"{model_path}: the tokenizer has no chat template (rlvr sft trains on "
                          "chat conversations)")
    kw = template_kwargs(cfg.data)
    train, skipped = load_sft_samples(s.train_path, tokenizer, kw, s.max_length, s.messages_key)
    held_out: list = []
    if s.eval_path:
        held_out, more = load_sft_samples(s.eval_path, tokenizer, kw, s.max_length, s.messages_key)
        skipped += more
    elif s.eval_rows:
        if s.eval_rows >= len(train):
            raise RecipeError("sft.eval_rows", f"must be < the {len(train)} usable train rows")
        train, held_out = train[:-s.eval_rows], train[-s.eval_rows:]
    steps = s.max_steps or math.ceil(s.epochs * len(train) / s.batch_size)
    return SFTData(model_path, train, held_out, skipped, steps)


def sft(cfg: Config) -> dict:
    """Run `rlvr sft`; returns a summary (run_dir, history, checkpoint, model, stopped_at)."""
    from rlvr.loop.train import in_run_folder

    data = prepare_sft(cfg)
    return in_run_folder(cfg, data.steps, lambda run_dir, status: _run(cfg, data, run_dir, status))


def _run(cfg: Config, data: SFTData, run_dir: str, status) -> dict:
    """The trainer ranks (on a cluster of their own unless one is joined), the loop, the clean-up."""
    import ray

    from rlvr.cluster.connect import connect
    from rlvr.cluster.env import runtime_env_for_actors
    from rlvr.cluster.logs import send_actor_output_to
    from rlvr.config.cluster import custom_resources_needed
    from rlvr.loop.control import stop_gracefully_on_signals
    from rlvr.run.checkpoint import resume_point
    from rlvr.trainer.group import TrainerGroup

    resume = resume_point(cfg.checkpoint.resume, run_dir)
    t = replace(cfg.trainer, total_steps=data.steps)  # the lr schedule spans the SFT run
    status.update(phase="actors")
    send_actor_output_to(None if cfg.logging.verbose else os.path.join(run_dir, "logs"))
    started = connect(cfg.cluster, max(1, math.ceil(t.num_workers * t.cpus_per_worker)),
                      custom_resources_needed(t, replace(cfg.rollout, num_engines=0)), verbose=cfg.logging.verbose)
    trainer, restore = None, lambda: None
    try:
        print(f"[rlvr] sft: {len(data.train)} rows, {data.steps} steps of {cfg.sft.batch_size} rows on "
              f"{t.num_workers} {t.backend} trainer rank(s)", flush=True)
        trainer = TrainerGroup(t, SFT_ALGORITHM, data.model_path, cfg.run.seed,
                               runtime_env=runtime_env_for_actors(cfg.model.cache_dir), lora=cfg.model.lora,
                               timeout_s=cfg.cluster.rpc_timeout_s)
        status.update(placement={"trainers": trainer.places()})
        restore = stop_gracefully_on_signals(run_dir)
        return sft_loop(cfg, data, trainer, run_dir, status, resume)
    finally:
        restore()
        send_actor_output_to(None)
        if trainer is not None:
            trainer.stop()
        if started:
            ray.shutdown()


def sft_loop(cfg: Config, data: SFTData, trainer, run_dir: str, status, resume: str | None) -> dict:
    """The steps (see the module docstring); returns the run's summary."""
    from rlvr.data.prompts import PromptSampler
    from rlvr.loop.control import obey_control
    from rlvr.run.control import ControlInbox, process_start_ns
    from rlvr.run.reporter import RunReporter

    s = cfg.sft
    run = RunReporter(run_dir, status, cfg.logging, data.steps)
    sampler = PromptSampler(len(data.train), cfg.run.seed, s.shuffle)
    inbox = ControlInbox(run_dir, since_ns=process_start_ns())
    saver = _Saver(run_dir, cfg.checkpoint, trainer, sampler, run)
    status.update(state="running", step=0)
    step = saver.restore(resume) if resume else 0
    if resume:
        run.open(resumed_at=step)
        print(f"[rlvr] resumed at step {step} from {resume}", flush=True)
    else:
        run.open()
        run.phase("eval")
        run.start({"step": 0, "sft/skipped_too_long": data.skipped, **held_out_loss(trainer, data.held_out)})
    stopped = None
    while step < data.steps and stopped is None:
        step += 1
        timer = run.timer()
        with timer("step"):
            batch = [data.train[i] for i in sampler.next_batch(s.batch_size)]
            with timer("train"):
                stats = trainer.train(batch)
        last = step == data.steps
        evals = held_out_loss(trainer, data.held_out) if last or (s.eval_every and step % s.eval_every == 0) else {}
        run.step({"step": step, "epoch": sampler.epoch + sampler.position / len(data.train),
                  **{k: stats[k] for k in ("loss", "grad_norm", "lr", "tokens/trained", "train/worker_s")},
                  "sft/rows": len(batch), **timer.times, **evals})
        if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and not last:
            saver.save(step, f"step_{step:06d}")
        if obey_control(inbox, status, lambda: saver.save(step, f"step_{step:06d}")):
            print(f"[rlvr] stopped by request after step {step}", flush=True)
            stopped = step
    run.close()
    final = model = None
    if cfg.checkpoint.save_final or stopped is not None:
        final = model = saver.save(stopped or data.steps, "final")
        if cfg.model.lora.rank:
            from rlvr.models.export import export

            model = export(final, os.path.join(run_dir, "merged"), merge=True)
        print(f"[rlvr] saved final checkpoint: {final}; train on with model.path={model}", flush=True)
    return {"run_dir": run_dir, "first_eval": run.first, "history": run.history, "checkpoint": final,
            "model": model, "stopped_at": stopped}


def held_out_loss(trainer, held_out: list) -> dict:
    """`eval/loss`: the token-mean NLL of the held-out rows' loss tokens (none: {})."""
    from rlvr.data.sft import token_mean_nll

    if not held_out:
        return {}
    return {"eval/loss": token_mean_nll(trainer.probe_logprobs(held_out), held_out)}


class _Saver:
    """`rlvr train`'s checkpoints for an SFT run: the trainer state and the sampler's position."""

    def __init__(self, run_dir: str, cfg, trainer, sampler, run):
        self.run_dir, self.cfg, self.trainer, self.sampler, self.run = run_dir, cfg, trainer, sampler, run

    def save(self, step: int, name: str) -> str:
        from rlvr.run.checkpoint import prune_checkpoints
        from rlvr.run.status import checkpoint_names

        self.run.phase("checkpoint")
        state = {"step": step, "weight_version": 0, "sampler": self.sampler.state_dict(), "sft": True}
        path = self.trainer.save_checkpoint(os.path.join(self.run_dir, "checkpoints", name), state)
        prune_checkpoints(self.run_dir, self.cfg.keep_last)
        self.run.checkpoints(checkpoint_names(self.run_dir))
        return path

    def restore(self, path: str) -> int:
        self.run.phase("resume")
        state = self.trainer.load_checkpoint(path)
        self.sampler.load_state_dict(state["sampler"])
        return state["step"]
