"""GRPO settings (TRL's `GRPOConfig` names; ms-swift's `swift rlhf` flags are translated to them
first) as an rlvr recipe, with every setting either mapped to a recipe key or listed as having
no equivalent.

The batch: TRL and ms-swift count *completions* per device (`per_device_train_batch_size`)
times devices times `gradient_accumulation_steps` (or `generation_batch_size`) per generation;
rlvr counts *prompts* per step (`data.prompts_per_step`), each sampled `rollout.n` times. So
prompts_per_step = completions / num_generations, and `per_device_train_batch_size` becomes
`trainer.micro_batch_size` (sequences per forward/backward on one rank).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

# hub ids of the datasets `rlvr data prepare` knows -> its name (matched without case)
KNOWN_DATASETS = {
    "openai/gsm8k": "gsm8k", "gsm8k": "gsm8k", "modelscope/gsm8k": "gsm8k",
    "hendrycks/competition_math": "math", "competition_math": "math", "eleutherai/hendrycks_math": "math",
    "digitallearninggmbh/math-lighteval": "math", "modelscope/competition_math": "math",
    "ai-mo/numinamath-cot": "numinamath", "ai-mo/numinamath-tir": "numinamath",
    "bytedtsinghua-sia/dapo-math-17k": "dapo-math-17k",
    "agentica-org/deepscaler-preview-dataset": "deepscaler",
}
# rewards of TRL (trl.rewards) and ms-swift (--reward_funcs) -> rlvr verifier items
REWARDS = {
    "accuracy": {"name": "math"}, "accuracy_reward": {"name": "math"},
    "format": {"name": "format", "require_think": True}, "think_format_reward": {"name": "format", "require_think": True},
}
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class ConvertError(ValueError):
    """A command or config that cannot be converted at all (not GRPO, a value that is not a number)."""


def as_bool(value: Any, flag: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise ConvertError(f"{flag}: expected true or false, got {value!r}")


def as_number(value: Any, flag: str, kind: type = float):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConvertError(f"{flag}: expected a number, got {value!r}") from None
    if kind is int:
        if number != int(number):
            raise ConvertError(f"{flag}: expected an integer, got {value!r}")
        return int(number)
    return number


def as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass
class Conversion:
    """The recipe being built, and what happened to each setting."""

    tool: str  # "ms-swift" or "TRL"
    flag_prefix: str = ""  # "--" for command-line flags
    recipe: dict = field(default_factory=dict)
    mapped: list[tuple[str, str]] = field(default_factory=list)  # (setting, "key: value, ...")
    unmapped: list[tuple[str, str]] = field(default_factory=list)  # (setting, why)
    todo: list[str] = field(default_factory=list)  # steps before the recipe runs

    def flag(self, name: str) -> str:
        return f"{self.flag_prefix}{name}"

    def put(self, key: str, value: Any) -> None:
        node = self.recipe
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    def get(self, key: str, default: Any = None) -> Any:
        node = self.recipe
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def set(self, setting: str, **keys: Any) -> None:
        """Map `setting` to recipe keys (dotted names with `__` for `.`)."""
        shown = []
        for key, value in keys.items():
            dotted_key = key.replace("__", ".")
            self.put(dotted_key, value)
            shown.append(f"{dotted_key}={value}")
        self.mapped.append((self.flag(setting), ", ".join(shown)))

    def skip(self, setting: str, why: str = "no rlvr equivalent; ignored") -> None:
        self.unmapped.append((self.flag(setting), why))


def slug(text: str) -> str:
    """A run or file name from a model or dataset id.

    >>> slug("Qwen/Qwen3-8B"), slug("AI-MO/NuminaMath-TIR")
    ('qwen3-8b', 'numinamath-tir')
    """
    return re.sub(r"[^a-z0-9._-]+", "-", text.rstrip("/").rsplit("/", 1)[-1].lower()).strip("-.") or "run"


def map_data(conv: Conversion, datasets: list[str]) -> None:
    """`dataset_name` (TRL) / `--dataset` (swift): data sources; a dataset `rlvr data prepare`
    knows is prepared to `data/<name>.jsonl` first (the recipe names that file)."""
    sources = []
    for spec in datasets:
        spec = str(spec)
        base, _, count = spec.partition("#")  # swift: dataset#N samples
        dataset_id, _, subset = base.partition(":")
        known = KNOWN_DATASETS.get(dataset_id.lower())
        suffix = f"#{count}" if count.isdigit() else ""
        if known:
            out = f"data/{slug(dataset_id)}.jsonl"
            hub = dataset_id + (":main" if known == "gsm8k" and not subset else f":{subset}" if subset else "")
            conv.todo.append(f"rlvr data prepare {known} --from hf:{hub} --out {out}")
            sources.append(out + suffix)
        elif os.path.exists(os.path.expanduser(dataset_id)):
            sources.append(base + suffix)
        else:
            sources.append(f"hf:{dataset_id}" + (f":{subset}" if subset else "") + ":train" + suffix)
    if not all(s.startswith("data/") for s in sources):
        conv.todo.append(f"check the fields of {', '.join(s for s in sources if not s.startswith('data/'))}: rlvr "
                         "reads prompt (or messages) and answer_key=solution (the column TRL/ms-swift's accuracy "
                         "reward reads); or convert it with `rlvr data prepare generic`")
        conv.put("data.answer_key", "solution")
    if len(sources) == 1:
        conv.set("dataset", data__train_path=sources[0])
    else:
        conv.set("dataset", data__train_mix=sources)
    conv.put("data.eval_path", None)


def map_rewards(conv: Conversion, funcs: list[str]) -> None:
    verifiers = []
    for name in funcs:
        item = REWARDS.get(str(name))
        if item is None:
            conv.skip(f"reward_funcs {name}", "no built-in rlvr verifier of that name: write one (README "
                      "\"Writing a verifier\") and add it to reward.verifiers")
        else:
            verifiers.append(dict(item))
    if any(v["name"] == "format" for v in verifiers):
        conv.todo.append("reward `format`: rlvr's checks one leading <think>...</think> block; ms-swift's also "
                         "wants <answer>...</answer> (add a `pattern` option to the format verifier for that)")
    if verifiers:
        conv.set("reward_funcs", reward__verifiers=verifiers)


def map_algorithm(conv: Conversion, s: dict) -> None:
    """beta, epsilon(_high), loss_type, scale_rewards, importance_sampling_level, delta."""
    if "beta" in s:
        conv.set("beta", algorithm__kl__coef=as_number(s.pop("beta"), "beta"))
    if "epsilon" in s:
        eps = as_number(s.pop("epsilon"), "epsilon")
        conv.set("epsilon", algorithm__clip_low=eps, **({} if "epsilon_high" in s else {"algorithm__clip_high": eps}))
    if "epsilon_high" in s:
        conv.set("epsilon_high", algorithm__clip_high=as_number(s.pop("epsilon_high"), "epsilon_high"))
    if "loss_type" in s:
        loss_type = str(s.pop("loss_type"))
        aggregation = {"grpo": "seq_mean_token_mean", "bnpo": "token_mean", "dapo": "token_mean",
                       "dr_grpo": "seq_mean_token_sum_norm"}.get(loss_type)
        if aggregation is None:
            conv.skip(f"loss_type {loss_type}", "no rlvr equivalent (have grpo, bnpo, dr_grpo, dapo)")
        elif loss_type == "dr_grpo":
            conv.set("loss_type", algorithm__aggregation=aggregation, algorithm__advantage="dr_grpo")
        else:
            conv.set("loss_type", algorithm__aggregation=aggregation)
    if "scale_rewards" in s:
        value = str(s.pop("scale_rewards")).lower()
        if value in ("true", "group", "1"):
            conv.set("scale_rewards", algorithm__advantage="grpo")
        elif value in ("false", "none", "0"):
            conv.set("scale_rewards", algorithm__advantage="dr_grpo")
        else:
            conv.skip(f"scale_rewards {value}", "no rlvr equivalent (advantage reinforce_pp divides by the "
                      "batch std after the group mean: the nearest)")
    if "importance_sampling_level" in s:
        level = str(s.pop("importance_sampling_level"))
        if level in ("sequence", "sequence_token"):
            conv.set("importance_sampling_level", algorithm__loss="gspo")
        elif level == "token":
            conv.set("importance_sampling_level", algorithm__loss="ppo_clip")
        else:
            conv.skip(f"importance_sampling_level {level}")
    if "delta" in s and s["delta"] is not None:
        conv.skip("delta", "two-sided clipping has no exact equivalent; algorithm.dual_clip caps the loss of "
                  "negative advantages at -c*A (dual-clip PPO)")
        s.pop("delta")


def map_rollout(conv: Conversion, s: dict) -> None:
    for setting, key, kind in (("num_generations", "rollout.n", int), ("max_completion_length", "rollout.max_tokens", int),
                               ("temperature", "rollout.temperature", float), ("top_p", "rollout.top_p", float),
                               ("top_k", "rollout.top_k", int),
                               ("vllm_tensor_parallel_size", "rollout.tensor_parallel_size", int),
                               ("vllm_gpu_memory_utilization", "rollout.engine_kwargs.gpu_memory_utilization", float),
                               ("vllm_max_model_len", "rollout.engine_kwargs.max_model_len", int)):
        if setting in s and s[setting] is not None:
            conv.set(setting, **{key.replace(".", "__"): as_number(s.pop(setting), setting, kind)})
    if "top_k" in conv.get("rollout", {}) and conv.get("rollout.top_k") == 0:
        conv.put("rollout.top_k", -1)  # TRL/transformers: 0 = off; vLLM: -1
    if "use_vllm" in s:
        use = as_bool(s.pop("use_vllm"), "use_vllm")
        conv.set("use_vllm", rollout__engine="vllm" if use else "hf")
    if "vllm_mode" in s:
        mode = str(s.pop("vllm_mode"))
        if mode not in ("colocate", "server"):
            conv.skip(f"vllm_mode {mode}", "expected colocate or server")
        else:
            conv.set("vllm_mode", cluster__placement="colocate" if mode == "colocate" else "side")
            if mode == "server":
                conv.todo.append("vllm_mode server: rlvr starts its own engines (rollout.num_engines, "
                                 "rollout.gpus_per_engine) on GPUs beside the trainer's; no separate `rollout` server")
    for setting in ("offload_model", "offload_optimizer"):
        if setting in s:
            if as_bool(s.pop(setting), setting):
                conv.set(setting, trainer__offload=True)


def map_trainer(conv: Conversion, s: dict) -> None:
    for setting, key, kind in (("learning_rate", "trainer.lr", float), ("warmup_steps", "trainer.warmup_steps", int),
                               ("weight_decay", "trainer.weight_decay", float), ("max_grad_norm", "trainer.grad_clip", float),
                               ("seed", "run.seed", int), ("save_steps", "checkpoint.every", int),
                               ("save_total_limit", "checkpoint.keep_last", int), ("eval_steps", "eval.every", int),
                               ("split_dataset_ratio", "data.eval_fraction", float)):
        if setting in s and s[setting] is not None:
            conv.set(setting, **{key.replace(".", "__"): as_number(s.pop(setting), setting, kind)})
    if "lr_scheduler_type" in s:
        kind = str(s.pop("lr_scheduler_type"))
        if kind in ("constant", "linear", "cosine"):
            conv.set("lr_scheduler_type", trainer__lr_schedule=kind)
        elif kind == "constant_with_warmup":
            conv.set("lr_scheduler_type", trainer__lr_schedule="constant")
        else:
            conv.skip(f"lr_scheduler_type {kind}", "rlvr has constant, linear and cosine")
    if "gradient_checkpointing" in s:
        conv.set("gradient_checkpointing",
                 trainer__gradient_checkpointing=as_bool(s.pop("gradient_checkpointing"), "gradient_checkpointing"))
    if "deepspeed" in s and s["deepspeed"] is not None:
        value = str(s.pop("deepspeed"))
        stage = re.search(r"zero[_-]?([123])", value.lower())
        if stage is None:
            conv.skip(f"deepspeed {value}", "expected zero1/zero2/zero3 (a JSON file: set trainer.deepspeed.zero_stage)")
        else:
            extra = {"trainer__offload": True} if "offload" in value else {}
            conv.set("deepspeed", trainer__backend="deepspeed", trainer__deepspeed__zero_stage=int(stage.group(1)), **extra)
    if "output_dir" in s:
        conv.set("output_dir", run__output_dir=str(s.pop("output_dir")))
    if "system" in s:
        conv.set("system", data__system_prompt=str(s.pop("system")))


def map_dtype(conv: Conversion, s: dict) -> None:
    """bf16 (TRL) / torch_dtype (swift); both tools train in bf16 unless told otherwise."""
    if "torch_dtype" in s:
        value = str(s.pop("torch_dtype"))
        dtype = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float32": "float32", "fp32": "float32"}.get(value)
        if dtype is None:
            conv.skip(f"torch_dtype {value}", "rlvr trains in float32 or bfloat16")
        else:
            conv.set("torch_dtype", model__dtype=dtype, trainer__dtype=dtype)
    if "bf16" in s:
        dtype = "bfloat16" if as_bool(s.pop("bf16"), "bf16") else "float32"
        conv.set("bf16", model__dtype=dtype, trainer__dtype=dtype)
    if "fp16" in s:
        if as_bool(s.pop("fp16"), "fp16"):
            conv.skip("fp16", "rlvr trains in float32 or bfloat16 (bfloat16 used)")
    if conv.get("model.dtype") is None:
        conv.put("model.dtype", "bfloat16")
        conv.put("trainer.dtype", "bfloat16")
