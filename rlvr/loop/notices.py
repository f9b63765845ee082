"""Warnings that matter to the user, once each, in rlvr's words, on the console.

The actors' own output (vLLM's, Ray's, the verifier processes') goes to `runs/<name>/logs/`
(`rlvr.cluster.logs`), so a warning printed there is never seen. What a user should know
about the run they started is gathered here by the driver after the groups start and
printed as `[rlvr] note: ...` lines:

* an engine quirk applied for the model's type (`rlvr.rollout.quirks.ENGINE_QUIRKS`);
* the code sandbox running without bubblewrap when a verifier or tool runs model code;
* what the trainer's rank 0 reports from its setup (e.g. the fused log-prob path falling
  back to full logits, with why: `TrainerWorker.notices`);
* an optimisation the recipe turns off without saying so (gradient checkpointing turns
  off the shared-prompt layout), or leaves off on GPUs: fp32 training on a GPU, vLLM's CUDA
  graphs (rlvr's default `enforce_eager: true`).
"""

from __future__ import annotations

SANDBOXED = {("verifier", "code"), ("tool", "python")}  # the built-ins that run model-written code


def startup_notices(cfg, model_path: str, trainer_notes: list[str] = (), bwrap: tuple[bool, str] | None = None
                    ) -> list[str]:
    """The notes for a run of `cfg` on `model_path` (deduplicated, in order). `bwrap`: the
    sandbox probe's (works, detail), probed here when a sandboxed plugin is used and it is None."""
    notes = _quirk_notes(cfg.rollout, model_path)
    if _runs_model_code(cfg):
        if bwrap is None:
            from rlvr.reward.sandbox import bwrap_status

            bwrap = bwrap_status()
        if not bwrap[0]:
            notes.append(f"the code sandbox runs without bubblewrap ({bwrap[1]}): model-written code can read "
                         "this machine's files and processes; install it: apt-get install bubblewrap")
    t = cfg.trainer
    if t.share_prompts and t.gradient_checkpointing and not t.pack_sequences:
        notes.append("trainer.gradient_checkpointing turns off the shared-prompt layout (each prompt runs once "
                     "per completion); set trainer.share_prompts=false to silence this")
    if t.gpus_per_worker and t.dtype == "float32":
        notes.append("the trainer runs in float32 on GPUs; trainer.dtype=bfloat16 (fp32 master weights, bf16 "
                     "compute) is about twice as fast")
    r = cfg.rollout
    if r.engine == "vllm" and r.gpus_per_engine and "enforce_eager" not in (r.engine_kwargs or {}):
        notes.append("vLLM runs without CUDA graphs (rlvr's default enforce_eager: true, quick to start); "
                     "rollout.engine_kwargs.enforce_eager=false captures them for faster decoding")
    notes += list(trainer_notes)
    return list(dict.fromkeys(notes))


def _quirk_notes(rollout, model_path: str) -> list[str]:
    if rollout.engine != "vllm":
        return []
    from rlvr.rollout.quirks import engine_quirks, model_type

    applied = {k: v for k, v in engine_quirks(model_path).items() if k not in (rollout.engine_kwargs or {})}
    if not applied:
        return []
    settings = ", ".join(f"{k}={v}" for k, v in applied.items())
    return [f"vLLM engine quirk for model_type {model_type(model_path)!r}: {settings} "
            "(rlvr/rollout/quirks.py; rollout.engine_kwargs overrides it)"]


def _runs_model_code(cfg) -> bool:
    used = {("verifier", item.name) for item in cfg.reward.items()}
    if cfg.rollout.multi_turn.enabled:
        used |= {("tool", item.name) for item in cfg.rollout.multi_turn.tool_items()}
    return bool(used & SANDBOXED)


def print_notices(notes: list[str]) -> None:
    for note in notes:
        print(f"[rlvr] note: {note}", flush=True)
