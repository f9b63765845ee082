"""The `model` section: which model the run starts from, its built-in tiny variant, and LoRA."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from rlvr.config.checks import require

BUILTIN_TINY_MODEL = "builtin:tiny"
BUILTIN_TINY_TOOLS = "builtin:tiny-tools"  # the tiny model warm-started to call the `calc` tool
BUILTIN_MODELS = (BUILTIN_TINY_MODEL, BUILTIN_TINY_TOOLS)
# `builtin:random-<family>`: a tiny *random* model of an architecture family, built locally by the
# model matrix's builder (`rlvr.models.families.build_tiny`) and cached; what `--smoke` runs on.
# The names are the keys of rlvr.models.families.FAMILIES (a unit test checks they are the same).
BUILTIN_RANDOM = "builtin:random-"
TINY_FAMILIES = ("qwen2", "qwen3", "llama", "gemma3", "mistral", "qwen3_moe")  # rlvr.models.families.FAMILIES
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model")
Dtype = Literal["float32", "bfloat16"]
LoRASync = Literal["auto", "adapter", "merged"]
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py, MaxLoRARanks


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
    sft_ema_decay: float = 0.0  # >0: measure and save an EMA of the SFT weights (see rlvr.models.families.tiny)
    sft_eval_every: int = 2  # steps between probe evaluations (once near the target)
    seed: int = 0


@dataclass
class LoRAConfig:
    """LoRA adapters on the trainer (peft); the engines get merged weights or the adapter (rlvr.trainer.lora)."""

    rank: int = 0  # 0: off (full fine-tuning)
    alpha: float = 32.0  # scaling = alpha / rank
    dropout: float = 0.0
    target_modules: Any = "all-linear"  # "all-linear" (every linear layer but the LM head) or a list of names
    sync: LoRASync = "auto"  # to the engines: adapter | merged | auto (adapter for vLLM on GPUs, else merged)

    def check(self) -> None:
        require(self.rank >= 0, "model.lora.rank", f"must be >= 0 (0: full fine-tuning), got {self.rank}")
        require(self.alpha > 0, "model.lora.alpha", f"must be > 0, got {self.alpha}")
        require(0 <= self.dropout < 1, "model.lora.dropout", f"must be in [0, 1), got {self.dropout}")
        targets = self.target_modules
        require(targets == "all-linear" or (isinstance(targets, list) and len(targets) > 0
                                            and all(isinstance(x, str) and x for x in targets)),
                "model.lora.target_modules",
                f"must be 'all-linear' or a non-empty list of module names, got {targets!r}")


@dataclass
class ModelConfig:
    # builtin:tiny, builtin:tiny-tools, builtin:random-<family>, a local folder, or a hub id
    path: str = BUILTIN_TINY_MODEL
    dtype: Dtype = "float32"
    trust_remote_code: bool = False
    cache_dir: str = "~/.cache/rlvr"  # where built-in models (and JIT-built ops) are kept
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)

    def check(self) -> None:
        self.lora.check()
        if self.path in BUILTIN_MODELS or random_family(self.path):
            return
        require(not self.path.startswith("builtin:"), "model.path",
                f"unknown built-in model {self.path!r} (have {', '.join(BUILTIN_MODELS)}, "
                f"{BUILTIN_RANDOM}{{{','.join(TINY_FAMILIES)}}})")
        check_model_source(self.path, "model.path")


@dataclass
class TeacherConfig:
    """On-policy distillation's teacher (`algorithm.distill_coef` > 0, `algorithm.preset: distill`):
    a model folder or hub id with the student's tokenizer, run forward-only (frozen, fp32 on CPU)
    on every trainer rank, as the KL reference model is."""

    path: Optional[str] = None

    def check(self) -> None:
        if self.path is not None:
            require(not self.path.startswith("builtin:"), "teacher.path",
                    "must be a model folder or hub id (a built-in model is the student's own start)")
            check_model_source(self.path, "teacher.path")


def check_model_source(path: str, key: str) -> None:
    """A hub id, or a local Hugging Face model folder (config.json + tokenizer files); errors name `key`."""
    local = os.path.expanduser(path)
    if not os.path.exists(local):
        require(looks_like_hub_id(path), key, f"{path}: no such model folder")
        return
    require(os.path.isdir(local), key, f"{path} is a file (expected a Hugging Face model folder)")
    config = os.path.join(local, "config.json")
    require(os.path.isfile(config), key, f"{path} has no config.json (expected a Hugging Face model folder)")
    try:
        with open(config, encoding="utf-8") as f:
            ok = isinstance(json.load(f), dict)
    except (OSError, ValueError):
        ok = False
    require(ok, key, f"{config} is not a readable JSON object")
    require(any(os.path.isfile(os.path.join(local, n)) for n in TOKENIZER_FILES), key,
            f"{path} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)})")


def random_family(path: str) -> str | None:
    """The family of a `builtin:random-<family>` path, else None.

    >>> random_family("builtin:random-qwen3"), random_family("builtin:random-gpt2"), random_family("builtin:tiny")
    ('qwen3', None, None)
    """
    family = path.removeprefix(BUILTIN_RANDOM) if path.startswith(BUILTIN_RANDOM) else None
    return family if family in TINY_FAMILIES else None


def looks_like_hub_id(path: str) -> bool:
    return bool(HUB_ID.fullmatch(path)) and not path.startswith((".", "/", "~"))


def lora_sync_mode(lora: LoRAConfig, rollout) -> str:
    """What the engines get: "full" (no LoRA), "merged" or "adapter" (see `rlvr.trainer.lora`).
    `auto` means "adapter" for vLLM engines on GPUs (rank within vLLM's limit), else "merged".

    >>> from rlvr.config.rollout import RolloutConfig
    >>> lora_sync_mode(LoRAConfig(rank=8), RolloutConfig()), lora_sync_mode(LoRAConfig(rank=8), RolloutConfig(gpus_per_engine=1))
    ('merged', 'adapter')
    >>> lora_sync_mode(LoRAConfig(rank=8, sync="adapter"), RolloutConfig()), lora_sync_mode(LoRAConfig(), RolloutConfig())
    ('adapter', 'full')
    """
    if lora.rank == 0:
        return "full"
    if lora.sync != "auto":
        return lora.sync
    fits = rollout.engine == "vllm" and lora.rank <= VLLM_MAX_LORA_RANKS[-1]
    return "adapter" if fits and rollout.gpus_per_engine > 0 else "merged"
