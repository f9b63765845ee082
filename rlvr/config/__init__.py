"""The recipe: a typed schema split by section, loaded from YAML plus `dotted.key=value` overrides.

    recipe.py     Config (the root: one field per section), load_recipe, to_yaml, to_dict
    checks.py     RecipeError, and the helpers each section's `check()` is written with
    run.py        run, checkpoint, service, logging
    model.py      model (with the built-in tiny model and LoRA)
    data.py       data (sources, train_mix items)
    rollout.py    rollout
    reward.py     reward (verifier items)
    algorithm.py  algorithm (and the papers' presets)
    trainer.py    trainer
    critic.py     critic (PPO's value model)
    eval.py       eval (named eval-set items)
    cluster.py    cluster
    sft.py        sft (`rlvr sft` only)
    sync.py       sync
    cross.py      the checks that span sections

Each component receives its own section (`cfg.trainer`, `cfg.rollout`, ...), never the root.
Importing this package imports no engine, trainer or data module, and not torch (a test checks).
"""

from rlvr.config.algorithm import (ASYNC_TIS_CAP, PRESETS, AlgorithmConfig, DynamicSamplingConfig, KLConfig,
                                   OverlongConfig)
from rlvr.config.checks import RecipeError
from rlvr.config.cluster import ClusterConfig
from rlvr.config.critic import CriticConfig
from rlvr.config.data import BUILTIN_ARITHMETIC, ArithmeticConfig, DataConfig, MixItem, ToolArithmeticConfig
from rlvr.config.eval import EvalConfig, EvalSetItem
from rlvr.config.model import BUILTIN_TINY_MODEL, LoRAConfig, ModelConfig, TinyModelConfig
from rlvr.config.recipe import Config, load_recipe, to_dict, to_yaml
from rlvr.config.reward import RewardConfig, VerifierItem
from rlvr.config.rollout import MultiTurnConfig, RolloutConfig, ToolItem
from rlvr.config.run import CheckpointConfig, LoggingConfig, MlflowConfig, RunConfig, ServiceConfig, WandbConfig
from rlvr.config.sft import SFTConfig
from rlvr.config.sync import SyncConfig
from rlvr.config.trainer import DeepSpeedConfig, FSDP2Config, TrainerConfig

__all__ = [
    "ASYNC_TIS_CAP", "BUILTIN_ARITHMETIC", "BUILTIN_TINY_MODEL", "PRESETS", "AlgorithmConfig", "ArithmeticConfig",
    "CheckpointConfig", "ClusterConfig", "Config", "CriticConfig", "DataConfig", "DeepSpeedConfig", "DynamicSamplingConfig",
    "EvalConfig", "EvalSetItem", "FSDP2Config", "KLConfig", "LoRAConfig", "LoggingConfig", "MixItem",
    "MlflowConfig", "ModelConfig", "MultiTurnConfig", "OverlongConfig", "RecipeError", "RewardConfig", "RolloutConfig", "RunConfig",
    "SFTConfig", "ServiceConfig", "SyncConfig", "TinyModelConfig", "ToolArithmeticConfig", "ToolItem", "TrainerConfig", "VerifierItem", "WandbConfig",
    "load_recipe", "to_dict", "to_yaml",
]
