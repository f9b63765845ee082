"""The recipe schema: typed dataclasses turned into an OmegaConf structured config.

A recipe is YAML grouped by role (run, model, data, rollout, reward, algorithm,
trainer, eval, checkpoint, cluster, service, logging). `load_recipe` merges the
YAML and `dotted.key=value` overrides onto the schema, so unknown keys and wrong
types fail at load naming the dotted key, then `check_recipe` rejects impossible
values and missing paths. Both raise `RecipeError`, which the CLI prints as one
line (exit code 2) before anything heavy is imported or started.

Each component receives its own section (`cfg.trainer`, `cfg.rollout`, ...),
never the root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

BUILTIN_TINY_MODEL = "builtin:tiny"
BUILTIN_ARITHMETIC = "builtin:arithmetic"


class RecipeError(ValueError):
    """A recipe problem, always naming the dotted key (or path) at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass
class RunConfig:
    name: str = "run"
    output_dir: str = "runs"
    seed: int = 0


@dataclass
class TinyModelConfig:
    """The built-in tiny model (`model.path: builtin:tiny`), built locally and cached."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 512
    sft_steps: int = 1500  # at most; the warm start stops earlier at sft_target_accuracy
    sft_lr: float = 2e-3
    sft_batch_size: int = 64
    sft_warmup_steps: int = 10
    sft_target_accuracy: float = 0.35  # greedy accuracy on a train-split probe that ends SFT (0: run all steps)
    sft_ema_decay: float = 0.0  # >0: measure and save an EMA of the SFT weights (see rlvr.tiny)
    sft_eval_every: int = 2  # steps between probe evaluations (once near the target)
    seed: int = 0


@dataclass
class LoRAConfig:
    """LoRA adapters on the trainer (peft); the engines get merged weights or the adapter (rlvr.trainer.lora)."""

    rank: int = 0  # 0: off (full fine-tuning)
    alpha: float = 32.0  # scaling = alpha / rank
    dropout: float = 0.0
    target_modules: Any = "all-linear"  # "all-linear" (every linear layer but the LM head) or a list of names
    sync: str = "auto"  # to the engines: adapter | merged | auto (adapter for vLLM on GPUs, else merged)


@dataclass
class ModelConfig:
    path: str = BUILTIN_TINY_MODEL  # builtin:tiny, a local folder, or a hub id
    dtype: str = "float32"  # float32 | bfloat16
    trust_remote_code: bool = False
    cache_dir: str = "~/.cache/rlvr"  # where built-in models (and JIT-built ops) are kept
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class ArithmeticConfig:
    """The built-in synthetic task: `Q: a+b=? A:`, answered with the digits of the sum."""

    min_operand: int = 0
    max_operand: int = 99
    num_train: int = 20000
    num_eval: int = 500
    seed: int = 1234  # fixed so the task (and its held-out split) never depends on run.seed


@dataclass
class DataConfig:
    train_path: str = BUILTIN_ARITHMETIC  # builtin:arithmetic, or .jsonl / .parquet
    eval_path: Optional[str] = BUILTIN_ARITHMETIC
    prompt_key: str = "prompt"  # a plain string prompt ...
    messages_key: str = "messages"  # ... or a chat list [{role, content}, ...]
    answer_key: str = "answer"
    system_prompt: Optional[str] = None
    apply_chat_template: bool = True
    # Qwen3-style thinking switch, passed to the chat template (None: the template's default;
    # templates without the variable ignore it); chat_template_kwargs: any other template variables
    enable_thinking: Optional[bool] = None
    chat_template_kwargs: Dict[str, Any] = field(default_factory=dict)
    prompts_per_step: int = 64
    shuffle: bool = True  # shuffle the train prompts each epoch (seeded by run.seed); false: file order
    # several sources mixed (rlvr.datamix): items "path#count" or {path, count} or {path, weight};
    # when set, replaces train_path. Sources: builtin:arithmetic, .jsonl/.parquet, datasets folders, hf:name
    train_mix: List[Any] = field(default_factory=list)
    mix_size: Optional[int] = None  # rows shared out by weight (default: the sources' total)
    mix_seed: int = 0  # the mixture's sampling and order (the same in every run of the recipe)
    eval_fraction: float = 0.0  # > 0: hold out this fraction of the train rows as the eval set (replaces eval_path)
    arithmetic: ArithmeticConfig = field(default_factory=ArithmeticConfig)


@dataclass
class RolloutConfig:
    engine: str = "vllm"  # vllm | hf
    num_engines: int = 1
    n: int = 8  # group size: samples per prompt
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    ignore_eos: bool = False
    engine_kwargs: Dict[str, Any] = field(default_factory=dict)  # passed to vllm.LLM
    cpus_per_engine: float = 1.0  # Ray logical CPUs per engine actor
    gpus_per_engine: float = 0.0
    num_threads: int = 2  # torch threads inside the engine process
    # 0: strictly on-policy. 1: batch t+1 is generated while the trainer trains on batch t
    # (one step off-policy; the trainer's TIS correction, algorithm.tis_cap, applies).
    max_staleness: int = 0
    tensor_parallel_size: int = 1  # vLLM tensor parallel inside one engine (GPUs: gpus_per_engine >= this)
    resources: Dict[str, float] = field(default_factory=dict)  # custom Ray resources per engine (node pinning)
    # Each engine's share of a batch is generated in this many calls; each chunk is sent to the
    # reward workers as soon as it returns, so scoring overlaps the generation still running.
    # 1 (default): one call per engine (overlap only across engines). Raise it for slow verifiers.
    chunks_per_engine: int = 1


@dataclass
class RewardConfig:
    # each item: {name, weight (1.0), timeout_s, failure_score, **options for the verifier}
    verifiers: List[Dict[str, Any]] = field(default_factory=lambda: [{"name": "math"}])
    num_workers: int = 1
    timeout_s: float = 5.0  # hard wall-clock limit per sample and verifier
    failure_score: float = 0.0  # score used when a verifier raises, hangs or returns NaN
    max_failure_fraction: float = 0.5  # a verifier failing on more of a step's samples stops the run
    cpus_per_worker: float = 0.5


@dataclass
class KLConfig:
    coef: float = 0.0  # 0: no reference model is loaded at all
    estimator: str = "k3"  # a key of rlvr.algos.KL: k1 | k2 | k3
    where: str = "loss"  # loss: add coef * KL per token to the loss; reward: subtract coef * sum KL from the reward


@dataclass
class DynamicSamplingConfig:
    """DAPO's dynamic sampling: drop all-equal groups, sample more prompts until the batch is full."""

    enabled: bool = False
    max_rounds: int = 3  # extra generate rounds per step at most


@dataclass
class OverlongConfig:
    """DAPO's soft overlong punishment over the last `cache_len` tokens before rollout.max_tokens."""

    enabled: bool = False
    cache_len: int = 4
    weight: float = 1.0


@dataclass
class AlgorithmConfig:
    preset: Optional[str] = None  # grpo | dr_grpo | dapo: the paper's settings (see PRESETS), overridable
    advantage: str = "grpo"  # a key of rlvr.algos.ADVANTAGES
    advantage_eps: float = 1e-6
    loss: str = "ppo_clip"  # a key of rlvr.algos.POLICY_LOSSES
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: Optional[float] = None  # dual-clip constant (> 1) for negative advantages
    aggregation: str = "token_mean"  # a mode of rlvr.algos.aggregate
    norm_tokens: Optional[int] = None  # seq_mean_token_sum_norm's constant; default rollout.max_tokens
    kl: KLConfig = field(default_factory=KLConfig)
    tis_cap: Optional[float] = None  # truncated importance sampling cap for engine/trainer mismatch
    entropy_coef: float = 0.0  # entropy bonus (0: entropy is only logged)
    skip_uniform_groups: bool = True  # don't train on groups whose rewards are all equal (zero advantage)
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)
    overlong: OverlongConfig = field(default_factory=OverlongConfig)


# The papers' settings; a recipe's own algorithm keys override them.
# Async rollouts (rollout.max_staleness >= 1) train on samples from the previous weights;
# unless the recipe sets algorithm.tis_cap, truncated importance sampling corrects for it.
# Measured on the default recipe, 40 steps, seed 0: held-out accuracy 0.393 -> 0.470 without
# the correction, -> 0.567 with cap 2 (0.633 on-policy).
ASYNC_TIS_CAP = 2.0

PRESETS: dict[str, dict] = {
    # DeepSeekMath (Shao et al. 2024): group-normalised advantage, per-sequence mean, k3 KL in the loss (beta 0.04)
    "grpo": {"advantage": "grpo", "loss": "ppo_clip", "aggregation": "seq_mean_token_mean",
             "clip_low": 0.2, "clip_high": 0.2, "kl": {"coef": 0.04, "estimator": "k3", "where": "loss"}},
    # Dr. GRPO (Liu et al. 2025): no std normalisation, token sums over a constant, no KL
    "dr_grpo": {"advantage": "dr_grpo", "loss": "ppo_clip", "aggregation": "seq_mean_token_sum_norm",
                "clip_low": 0.2, "clip_high": 0.2, "kl": {"coef": 0.0}},
    # DAPO (Yu et al. 2025): clip-higher, dynamic sampling, token-level loss, overlong shaping, no KL
    "dapo": {"advantage": "grpo", "loss": "ppo_clip", "aggregation": "token_mean", "clip_low": 0.2,
             "clip_high": 0.28, "kl": {"coef": 0.0}, "dynamic_sampling": {"enabled": True},
             "overlong": {"enabled": True}},
}


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 2


@dataclass
class FSDP2Config:
    reshard_after_forward: bool = True


@dataclass
class TrainerConfig:
    backend: str = "fsdp2"  # fsdp2 | deepspeed
    num_workers: int = 2  # ranks
    total_steps: int = 100
    lr: float = 3e-4
    lr_schedule: str = "constant"  # constant | linear | cosine
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0
    micro_batch_size: int = 64  # sequences per forward/backward on one rank
    updates_per_step: int = 1  # optimizer steps per batch (mini-batches)
    dtype: str = "float32"  # float32 | bfloat16 (training precision)
    num_threads: int = 1  # torch threads per rank
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    gradient_checkpointing: bool = False
    # each prompt's forward/backward once per micro-batch, shared by its completions through the
    # KV cache (rlvr.trainer.batch); off with gradient_checkpointing (HF turns the cache off then)
    share_prompts: bool = True
    # torch.compile the norm and MLP blocks (rlvr.trainer.compile): ~6% off a CPU step after
    # ~20 s of compiling; needs a C++ compiler on CPU; not with DeepSpeed ZeRO-3
    compile_blocks: bool = False
    offload: bool = False  # colocate on GPU: params/grads/optimizer state to CPU while engines generate
    resources: Dict[str, float] = field(default_factory=dict)  # custom Ray resources per rank (node pinning)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    fsdp2: FSDP2Config = field(default_factory=FSDP2Config)


@dataclass
class EvalConfig:
    every: int = 10  # steps between held-out evaluations (0: only at start and end)
    num_prompts: int = 500
    max_tokens: Optional[int] = None  # default: rollout.max_tokens
    accuracy_verifier: Optional[str] = None  # its score >= 1 counts as correct; default: the first verifier
    # named eval sets, each {name, path, num_prompts, verifiers, n, temperature, max_tokens}: eval/<name>/* (rlvr.evalsets)
    sets: List[Any] = field(default_factory=list)


@dataclass
class CheckpointConfig:
    save_final: bool = True
    every: int = 0  # 0: only the final checkpoint
    keep_last: int = 3  # step checkpoints kept (older ones deleted once a newer one is complete); 0: all
    resume: Optional[str] = None  # null | auto (newest valid checkpoint of this run) | a checkpoint folder


@dataclass
class ClusterConfig:
    address: Optional[str] = None  # join this Ray cluster (RAY_ADDRESS also works)
    num_cpus: Optional[int] = None  # logical CPUs of a private local cluster (default: what the recipe asks)
    temp_dir: Optional[str] = None
    # side: engines on their own CPUs/GPUs. colocate: engine i shares trainer rank i's placement-group
    # bundle (and GPU); on GPUs the engine sleeps while the trainer steps.
    placement: str = "side"
    rpc_timeout_s: float = 1800.0  # deadline of every blocking remote call; a hang becomes an error naming the call


@dataclass
class SyncConfig:
    method: str = "broadcast"  # broadcast (process group) | ipc (shared memory / CUDA IPC) | disk (safetensors)
    bucket_mb: float = 64.0  # broadcast/ipc/disk buckets: peak extra memory is about one bucket
    dir: Optional[str] = None  # disk: a folder every node can read (default: <run>/sync)
    verify: str = "every_n"  # off | every_n | always: compare engine and trainer log-probs on probe samples
    verify_every: int = 20  # every_n: check at this many syncs (and the first)
    verify_tol: float = 1e-3  # max |engine - trainer| log-prob on the probe (fp32; raise for bf16)

@dataclass
class ServiceConfig:
    enabled: bool = False  # serve the status/control API (and dashboard) while the run is active
    host: str = "127.0.0.1"
    port: int = 8777
    token_env: str = "RLVR_TOKEN"  # control endpoints need `Authorization: Bearer <token>` from this variable...
    token_file: Optional[str] = None  # ...or from this file; with neither, control endpoints are refused
    heartbeat_s: float = 5.0  # status.json refreshed this often; a run silent for 6x this shows `stale`


@dataclass
class WandbConfig:
    project: str = "rlvr"
    entity: Optional[str] = None
    mode: str = "offline"  # offline (no network; `wandb sync` later) | online | disabled


@dataclass
class MlflowConfig:
    tracking_uri: Optional[str] = None  # default: a file store in <run>/mlruns
    experiment: str = "rlvr"


@dataclass
class LoggingConfig:
    progress: bool = True  # progress bar over steps
    print_samples: int = 1  # completions printed at each eval (0: none)
    samples_per_step: int = 32  # samples (prompt, completion, rewards) kept per step in <run>/samples/ (0: none)
    jsonl: bool = True
    plots: bool = True  # PNG charts in <run>/plots/ at the end of the run (rlvr.plots; also `rlvr plot RUN`)
    sinks: List[str] = field(default_factory=list)  # besides metrics.jsonl: tensorboard | wandb | mlflow (rlvr.sinks)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def load_recipe(path: str | None, overrides: list[str] = ()) -> Config:
    """Load a YAML recipe plus `dotted.key=value` overrides onto the schema, then check it."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    schema = OmegaConf.structured(Config)
    try:
        layers = []
        if path is not None:
            if not os.path.isfile(path):
                raise RecipeError(path, "recipe file not found")
            layers.append(_load_yaml(path))
        for item in overrides:
            if "=" not in item:
                raise RecipeError(item, "override must look like dotted.key=value")
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        user = OmegaConf.merge(*layers) if layers else OmegaConf.create({})
        preset = OmegaConf.select(user, "algorithm.preset", default=None)
        if preset is not None and preset not in PRESETS:
            raise RecipeError("algorithm.preset", f"must be one of {sorted(PRESETS)}, got {preset!r}")
        staleness = OmegaConf.select(user, "rollout.max_staleness", default=0)
        merged = OmegaConf.merge(schema, {"algorithm": PRESETS[preset]} if preset else {},
                                 {"algorithm": {"tis_cap": ASYNC_TIS_CAP}} if staleness else {}, user)
        OmegaConf.resolve(merged)
        cfg: Config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise RecipeError(getattr(e, "full_key", None) or "recipe", _first_line(getattr(e, "msg", str(e)))) from None
    if cfg.sync.verify in ("False", "false"):  # YAML 1.1 reads a bare `off` as false
        cfg.sync.verify = "off"
    check_recipe(cfg)
    return cfg


def to_yaml(cfg: Config) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg))


def _load_yaml(path: str):
    from omegaconf import OmegaConf

    try:
        return OmegaConf.load(path)
    except Exception as e:  # yaml syntax errors
        raise RecipeError(path, f"not valid YAML: {_first_line(str(e))}") from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise RecipeError(key, message)


def _one_of(value: str, key: str, choices) -> None:
    _require(value in choices, key, f"must be one of {sorted(choices)}, got {value!r}")


def check_recipe(cfg: Config) -> None:
    """Reject impossible values and missing paths, naming the dotted key."""
    from rlvr import algos  # pure torch functions; cheap enough

    _require(bool(re.fullmatch(r"[A-Za-z0-9._-]+", cfg.run.name)), "run.name", "use letters, digits, '.', '_' or '-'")
    _check_model(cfg.model)
    _check_lora(cfg.model.lora, cfg.trainer, cfg.rollout)
    _check_data(cfg.data)

    r = cfg.rollout
    _one_of(r.engine, "rollout.engine", {"vllm", "hf"})
    _require(r.num_engines >= 1, "rollout.num_engines", "must be >= 1")
    _require(r.max_tokens >= 1, "rollout.max_tokens", "must be >= 1")
    _require(r.temperature > 0, "rollout.temperature", "must be > 0 (RL needs sampling)")
    _require(0 < r.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
    _require(r.num_threads >= 1, "rollout.num_threads", "must be >= 1")

    a = cfg.algorithm
    _one_of(a.advantage, "algorithm.advantage", set(algos.ADVANTAGES))
    _one_of(a.loss, "algorithm.loss", set(algos.POLICY_LOSSES))
    _one_of(a.aggregation, "algorithm.aggregation", set(algos.AGGREGATIONS))
    _one_of(a.kl.estimator, "algorithm.kl.estimator", set(algos.KL))
    _one_of(a.kl.where, "algorithm.kl.where", {"loss", "reward"})
    _require(a.kl.coef >= 0, "algorithm.kl.coef", "must be >= 0")
    _require(a.dual_clip is None or a.dual_clip > 1, "algorithm.dual_clip", "must be > 1 (or null)")
    _require(a.tis_cap is None or a.tis_cap > 0, "algorithm.tis_cap", "must be > 0 (or null)")
    _require(a.norm_tokens is None or a.norm_tokens >= 1, "algorithm.norm_tokens", "must be >= 1")
    _require(a.dynamic_sampling.max_rounds >= 0, "algorithm.dynamic_sampling.max_rounds", "must be >= 0")
    _require(0 < a.overlong.cache_len <= r.max_tokens or not a.overlong.enabled, "algorithm.overlong.cache_len",
             f"must be in [1, rollout.max_tokens={r.max_tokens}]")
    _require(r.n >= 2 or a.advantage not in algos.GROUP_ADVANTAGES, "rollout.n",
             f"group size must be >= 2 for {a.advantage!r} (advantages are relative to the group), got {r.n}")
    _require(r.n >= 1, "rollout.n", "must be >= 1")
    _require(a.clip_low >= 0 and a.clip_high >= 0, "algorithm.clip_low", "clip ranges must be >= 0")

    _check_reward(cfg.reward)
    from rlvr.sinks import check_logging

    check_logging(cfg.logging, _require)
    from rlvr.evalsets import check_sets

    problem = check_sets(list(cfg.eval.sets))
    _require(problem is None, *(problem or ("", "")))

    t = cfg.trainer
    _one_of(t.backend, "trainer.backend", {"fsdp2", "deepspeed"})
    _one_of(t.deepspeed.zero_stage, "trainer.deepspeed.zero_stage", {1, 2, 3})
    _require(not (t.compile_blocks and t.backend == "deepspeed" and t.deepspeed.zero_stage == 3),
             "trainer.compile_blocks", "is not supported with DeepSpeed ZeRO-3 (its hooks gather "
             "parameters inside the blocks); use stage 1/2 or fsdp2")
    _one_of(t.dtype, "trainer.dtype", {"float32", "bfloat16"})
    _one_of(t.lr_schedule, "trainer.lr_schedule", {"constant", "linear", "cosine"})
    _require(t.num_workers >= 1, "trainer.num_workers", "must be >= 1")
    _require(t.total_steps >= 1, "trainer.total_steps", "must be >= 1")
    _require(t.lr > 0, "trainer.lr", "must be > 0")
    _require(t.micro_batch_size >= 1, "trainer.micro_batch_size", "must be >= 1")
    _require(t.updates_per_step >= 1, "trainer.updates_per_step", "must be >= 1")
    _require(len(t.betas) == 2, "trainer.betas", "must be two numbers")
    _require(t.num_threads >= 1, "trainer.num_threads", "must be >= 1")
    _require(cfg.data.prompts_per_step * r.n >= t.num_workers, "data.prompts_per_step",
             "a step must have at least one sample per trainer rank")

    if cfg.eval.accuracy_verifier is not None:
        from rlvr.reward.pool import verifier_keys

        keys = verifier_keys(list(cfg.reward.verifiers))
        _one_of(cfg.eval.accuracy_verifier, "eval.accuracy_verifier", set(keys))
    _require(cfg.rollout.chunks_per_engine >= 1, "rollout.chunks_per_engine", "must be >= 1")
    _one_of(cfg.rollout.max_staleness, "rollout.max_staleness", {0, 1})
    _require(cfg.rollout.tensor_parallel_size >= 1, "rollout.tensor_parallel_size", "must be >= 1")
    if cfg.rollout.gpus_per_engine:
        _require(cfg.rollout.gpus_per_engine >= cfg.rollout.tensor_parallel_size, "rollout.gpus_per_engine",
                 f"an engine with tensor_parallel_size={cfg.rollout.tensor_parallel_size} needs that many GPUs")
    _one_of(cfg.cluster.placement, "cluster.placement", {"side", "colocate"})
    _require(not (cfg.rollout.max_staleness and cfg.cluster.placement == "colocate"), "rollout.max_staleness",
             "async rollouts generate while the trainer trains: they need cluster.placement=side")
    if cfg.cluster.placement == "colocate":
        _require(cfg.rollout.num_engines <= cfg.trainer.num_workers, "rollout.num_engines",
                 f"colocate puts each engine beside a trainer rank: at most trainer.num_workers="
                 f"{cfg.trainer.num_workers} engines, got {cfg.rollout.num_engines}")
    _one_of(cfg.sync.method, "sync.method", {"broadcast", "ipc", "disk"})
    _require(cfg.sync.bucket_mb > 0, "sync.bucket_mb", "must be > 0")
    _one_of(cfg.sync.verify, "sync.verify", {"off", "every_n", "always"})
    _require(cfg.sync.verify_every >= 1, "sync.verify_every", "must be >= 1")
    _require(cfg.sync.verify_tol > 0, "sync.verify_tol", "must be > 0")
    _require(cfg.eval.every >= 0, "eval.every", "must be >= 0")
    _require(cfg.eval.num_prompts >= 0, "eval.num_prompts", "must be >= 0")
    _require(cfg.checkpoint.every >= 0, "checkpoint.every", "must be >= 0")
    _require(cfg.checkpoint.keep_last >= 0, "checkpoint.keep_last", "must be >= 0")
    if cfg.checkpoint.resume not in (None, "auto"):
        _require(os.path.isdir(os.path.expanduser(cfg.checkpoint.resume)), "checkpoint.resume",
                 f"must be null, auto or a checkpoint folder; no such folder: {cfg.checkpoint.resume}")
    _require(cfg.cluster.rpc_timeout_s > 0, "cluster.rpc_timeout_s", "must be > 0")
    if cfg.cluster.num_cpus is not None and not (cfg.cluster.address or os.environ.get("RAY_ADDRESS")):
        from rlvr.cluster import logical_cpus_needed  # a private cluster would wait forever for the rest

        need = logical_cpus_needed(cfg)
        _require(cfg.cluster.num_cpus >= need, "cluster.num_cpus",
                 f"the recipe's trainer ranks, engines and reward workers need {need} logical CPUs, got "
                 f"{cfg.cluster.num_cpus} (raise it, or leave it null to size the cluster to the recipe)")
    _require(0 <= cfg.service.port <= 65535, "service.port", "must be a TCP port (0: any free port)")
    _require(cfg.service.heartbeat_s > 0, "service.heartbeat_s", "must be > 0")
    if cfg.service.token_file is not None:
        _require(os.path.isfile(os.path.expanduser(cfg.service.token_file)), "service.token_file",
                 f"no such file: {cfg.service.token_file}")
    _require(cfg.logging.samples_per_step >= 0, "logging.samples_per_step", "must be >= 0")
    _one_of(cfg.model.dtype, "model.dtype", {"float32", "bfloat16"})


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def looks_like_hub_id(path: str) -> bool:
    return bool(HUB_ID.fullmatch(path)) and not path.startswith((".", "/", "~"))


def _check_model(m: ModelConfig) -> None:
    if m.path == BUILTIN_TINY_MODEL:
        return
    _require(not m.path.startswith("builtin:"), "model.path", f"unknown built-in model {m.path!r} (have {BUILTIN_TINY_MODEL})")
    local = os.path.expanduser(m.path)
    if os.path.exists(local):
        import json

        _require(os.path.isdir(local), "model.path", f"{m.path} is a file (expected a Hugging Face model folder)")
        config = os.path.join(local, "config.json")
        _require(os.path.isfile(config), "model.path",
                 f"{m.path} has no config.json (expected a Hugging Face model folder)")
        try:
            with open(config, encoding="utf-8") as f:
                ok = isinstance(json.load(f), dict)
        except (OSError, ValueError):
            ok = False
        _require(ok, "model.path", f"{config} is not a readable JSON object")
        tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                           "spiece.model")
        _require(any(os.path.isfile(os.path.join(local, n)) for n in tokenizer_files), "model.path",
                 f"{m.path} has no tokenizer files (none of {', '.join(tokenizer_files)})")
        return
    _require(looks_like_hub_id(m.path), "model.path", f"{m.path}: no such model folder")


def _check_lora(lora: LoRAConfig, t: TrainerConfig, r: RolloutConfig) -> None:
    _require(lora.rank >= 0, "model.lora.rank", f"must be >= 0 (0: full fine-tuning), got {lora.rank}")
    _require(lora.alpha > 0, "model.lora.alpha", f"must be > 0, got {lora.alpha}")
    _require(0 <= lora.dropout < 1, "model.lora.dropout", f"must be in [0, 1), got {lora.dropout}")
    targets = lora.target_modules
    _require(targets == "all-linear" or (isinstance(targets, list) and len(targets) > 0
                                         and all(isinstance(x, str) and x for x in targets)),
             "model.lora.target_modules", f"must be 'all-linear' or a non-empty list of module names, got {targets!r}")
    _require(not (lora.rank and t.compile_blocks), "trainer.compile_blocks",
             "is not supported with LoRA (model.lora.rank > 0): the compiled MLP blocks would trace peft's layers")
    from rlvr.trainer.lora import check_sync
    check_sync(lora, r, _require)  # model.lora.sync


def _check_data(d: DataConfig) -> None:
    _require(d.prompts_per_step >= 1, "data.prompts_per_step", "must be >= 1")
    from rlvr.datamix import check_sources

    check_sources(d, _require)  # train_path / eval_path / train_mix / eval_fraction
    ar = d.arithmetic
    _require(0 <= ar.min_operand <= ar.max_operand, "data.arithmetic.max_operand", "must be >= min_operand >= 0")
    _require(ar.num_train >= 1, "data.arithmetic.num_train", "must be >= 1")
    pairs = (ar.max_operand - ar.min_operand + 1) ** 2
    _require(0 <= ar.num_eval < pairs or BUILTIN_ARITHMETIC not in (d.train_path, d.eval_path),
             "data.arithmetic.num_eval",
             f"must be in [0, {pairs - 1}]: the operands give {pairs} distinct pairs and training needs some")


def _check_reward(rw: RewardConfig) -> None:
    _require(len(rw.verifiers) >= 1, "reward.verifiers", "at least one verifier is needed")
    _require(rw.num_workers >= 1, "reward.num_workers", "must be >= 1")
    _require(rw.timeout_s > 0, "reward.timeout_s", "must be > 0")
    _require(0 < rw.max_failure_fraction <= 1, "reward.max_failure_fraction", "must be in (0, 1]")
    for i, v in enumerate(rw.verifiers):
        key = f"reward.verifiers[{i}]"
        _require(isinstance(v.get("name"), str) and v["name"], f"{key}.name", "each verifier needs a name")
        _require(isinstance(v.get("weight", 1.0), (int, float)), f"{key}.weight", "must be a number")
        _require(isinstance(v.get("timeout_s", 1.0), (int, float)) and v.get("timeout_s", 1.0) > 0,
                 f"{key}.timeout_s", "must be a number > 0")
        from rlvr.reward.registry import resolve_verifier_name

        try:
            resolve_verifier_name(v["name"])
        except LookupError as e:
            raise RecipeError(f"{key}.name", str(e)) from None
