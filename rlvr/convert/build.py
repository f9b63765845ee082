"""The whole conversion: settings (TRL names) -> `Conversion` -> recipe YAML with comments."""

from __future__ import annotations

import math

from rlvr.convert.grpo import (Conversion, as_bool, as_number, map_algorithm, map_data, map_dtype, map_rewards,
                               map_rollout, map_trainer, slug)

NO_EQUIVALENT = {
    "max_prompt_length": "prompts are not truncated; rlvr drops prompts that do not fit the model (rollout.max_tokens "
                         "bounds the completion; rollout.engine_kwargs.max_model_len caps prompt + completion in vLLM)",
    "max_length": "prompts are not truncated; rollout.max_tokens bounds the completion and "
                  "rollout.engine_kwargs.max_model_len caps prompt + completion in vLLM",
    "mask_truncated_completions": "truncated completions are trained on; algorithm.overlong (DAPO's soft overlong "
                                  "penalty) is the nearest",
    "num_train_epochs": "rlvr counts steps: set trainer.total_steps (epochs x rows / data.prompts_per_step)",
    "warmup_ratio": "set trainer.warmup_steps (ratio x trainer.total_steps)",
}


def map_lora(conv: Conversion, s: dict) -> None:
    """swift --train_type lora|full, --lora_rank/--lora_alpha; TRL use_peft, lora_r/lora_alpha/lora_dropout."""
    lora = None
    if "train_type" in s:
        kind = str(s.pop("train_type"))
        if kind not in ("lora", "full"):
            conv.skip(f"train_type {kind}", "rlvr trains full weights or LoRA")
        lora = kind == "lora"
    if "use_peft" in s:
        lora = as_bool(s.pop("use_peft"), "use_peft")
    rank = s.pop("lora_r", s.pop("lora_rank", None))
    alpha = s.pop("lora_alpha", None)
    dropout = s.pop("lora_dropout", None)
    targets = s.pop("lora_target_modules", s.pop("target_modules", None))
    explicit = lora is not None
    if lora is None:  # ms-swift trains LoRA unless --train_type full; TRL full weights unless use_peft
        lora = bool(conv.flag_prefix)
    if not lora:
        if explicit:
            conv.set("train_type" if conv.flag_prefix else "use_peft", model__lora__rank=0)
        return
    keys = {"model__lora__rank": as_number(rank, "lora_rank", int) if rank is not None else (8 if conv.flag_prefix else 16)}
    if alpha is not None:
        keys["model__lora__alpha"] = as_number(alpha, "lora_alpha")
    if dropout is not None:
        keys["model__lora__dropout"] = as_number(dropout, "lora_dropout")
    if targets is not None:
        names = [str(t) for t in (targets if isinstance(targets, (list, tuple)) else [targets])]
        keys["model__lora__target_modules"] = "all-linear" if names in (["all-linear"], ["all_linear"]) else names
    conv.set("train_type/lora_*" if conv.flag_prefix else "use_peft/lora_*", **keys)


def map_batch(conv: Conversion, s: dict, gpus: int) -> None:
    """per_device_train_batch_size, gradient_accumulation_steps, generation_batch_size,
    steps_per_generation, num_iterations, max_steps -> prompts per step, micro-batch, updates, steps."""
    n = conv.get("rollout.n", 8)
    per_device = s.pop("per_device_train_batch_size", None)
    accum = as_number(s.pop("gradient_accumulation_steps", 1), "gradient_accumulation_steps", int)
    spg = s.pop("steps_per_generation", None)
    gen_batch = s.pop("generation_batch_size", None)
    iterations = as_number(s.pop("num_iterations", 1), "num_iterations", int)
    updates = iterations * (max(1, as_number(spg, "steps_per_generation", int) // accum) if spg is not None else 1)
    if per_device is not None:
        per_device = as_number(per_device, "per_device_train_batch_size", int)
        conv.set("per_device_train_batch_size", trainer__micro_batch_size=per_device)
    completions = (as_number(gen_batch, "generation_batch_size", int) if gen_batch is not None else
                   per_device * gpus * (as_number(spg, "steps_per_generation", int) if spg is not None else accum)
                   if per_device is not None else None)
    if completions is not None:
        prompts = max(1, completions // n)
        conv.set("per_device_train_batch_size x gpus x gradient_accumulation_steps / num_generations",
                 data__prompts_per_step=prompts)
        if completions % n:
            conv.todo.append(f"{completions} completions per generation is not a multiple of num_generations={n} "
                             f"(TRL refuses it); data.prompts_per_step={prompts} gives {prompts * n}")
    if updates > 1:
        conv.set("num_iterations", trainer__updates_per_step=updates)
        conv.todo.append(f"num_iterations={iterations}: TRL passes over each batch {iterations} times; rlvr makes "
                         f"{updates} optimizer steps over mini-batches of it in one pass (the same number of updates)")
    if "max_steps" in s and as_number(s["max_steps"], "max_steps", int) > 0:
        steps = as_number(s.pop("max_steps"), "max_steps", int)
        conv.set("max_steps", trainer__total_steps=max(1, math.ceil(steps / updates)))
    s.pop("max_steps", None)


def map_resources(conv: Conversion, gpus: int) -> None:
    """GPUs: one trainer rank per GPU; colocate: an engine beside each rank (half a GPU each, the engine
    sleeping while the trainer steps); side: one engine on a GPU of its own (tensor_parallel_size GPUs)."""
    tp = conv.get("rollout.tensor_parallel_size", 1)
    conv.put("trainer.num_workers", gpus)
    if conv.get("cluster.placement") == "colocate" and tp == 1:
        conv.put("trainer.gpus_per_worker", 0.5)
        conv.put("rollout.num_engines", gpus)
        conv.put("rollout.gpus_per_engine", 0.5)
    else:
        conv.put("trainer.gpus_per_worker", 1)
        conv.put("rollout.num_engines", 1)
        conv.put("rollout.gpus_per_engine", tp)
        if conv.get("cluster.placement") == "colocate":
            conv.put("cluster.placement", "side")
            conv.todo.append("colocate with tensor parallel engines: rlvr colocates one engine per trainer rank; "
                             "this recipe puts the engine on GPUs of its own (cluster.placement=side)")


def convert_settings(conv: Conversion, s: dict, gpus: int) -> Conversion:
    """Map every setting of `s` (TRL names; consumed) onto `conv`."""
    s = {k: v for k, v in s.items() if v is not None}
    model = s.pop("model_name_or_path", None)
    if model is not None:
        conv.set("model" if conv.flag_prefix else "model_name_or_path", model__path=str(model))
        conv.put("run.name", f"{slug(str(model))}-grpo")
    if "dataset_name" in s:
        map_data(conv, [str(d) for d in (s.pop("dataset_name") if isinstance(s.get("dataset_name"), list)
                                         else [s.pop("dataset_name")])])
    if "reward_funcs" in s:
        map_rewards(conv, [str(f) for f in (s.pop("reward_funcs") if isinstance(s.get("reward_funcs"), list)
                                            else [s.pop("reward_funcs")])])
    map_rollout(conv, s)
    if "loss_type" not in s:
        conv.todo.append("loss_type not given: rlvr's default aggregation is token_mean (loss_type bnpo/dapo); "
                         "algorithm.aggregation=seq_mean_token_mean is loss_type grpo's per-sequence mean")
    map_algorithm(conv, s)
    map_trainer(conv, s)
    map_dtype(conv, s)
    map_lora(conv, s)
    map_batch(conv, s, gpus)
    map_resources(conv, gpus)
    for setting in list(s):
        conv.skip(setting, NO_EQUIVALENT.get(setting, "no rlvr equivalent; ignored"))
    return conv


def to_yaml(conv: Conversion, command: str) -> str:
    """The recipe as YAML, headed by comments: what it came from, what to do first, what was not converted."""
    import yaml

    lines = [f"# Converted by `rlvr convert` from {conv.tool}:", f"#   {command}"]
    if conv.todo:
        lines += ["#", "# Before training:"] + [f"#   - {t}" for t in conv.todo]
    if conv.unmapped:
        lines += ["#", f"# {conv.tool} settings with no rlvr equivalent (not converted):"]
        lines += [f"#   {flag}: {why}" for flag, why in conv.unmapped]
    lines += ["#", "# Mapped:"] + [f"#   {flag} -> {keys}" for flag, keys in conv.mapped]
    lines.append("# Check it with: rlvr validate THIS.yaml")
    order = ["run", "model", "data", "rollout", "reward", "algorithm", "trainer", "eval", "checkpoint", "cluster"]
    recipe = {k: conv.recipe[k] for k in order if k in conv.recipe}
    recipe.update({k: v for k, v in conv.recipe.items() if k not in recipe})
    return "\n".join(lines) + "\n" + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True, width=1000)
