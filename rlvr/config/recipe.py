"""The root of the recipe schema, and loading a recipe.

`load_recipe` merges the YAML file and `dotted.key=value` overrides onto the schema (an
OmegaConf structured config made from the dataclasses), so unknown keys, wrong types and
values outside a choice type fail at load naming the dotted key; then every section checks
itself and `check_across` checks what spans sections. Both raise `RecipeError`, which the
CLI prints as one line (exit code 2) before anything heavy is imported or started.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from rlvr.config.algorithm import ASYNC_TIS_CAP, PRESETS, AlgorithmConfig
from rlvr.config.checks import RecipeError
from rlvr.config.cluster import ClusterConfig
from rlvr.config.critic import CriticConfig
from rlvr.config.cross import check_across
from rlvr.config.data import DataConfig
from rlvr.config.eval import EvalConfig
from rlvr.config.model import ModelConfig, TeacherConfig
from rlvr.config.reward import RewardConfig
from rlvr.config.rollout import RolloutConfig
from rlvr.config.run import CheckpointConfig, LoggingConfig, RunConfig, ServiceConfig
from rlvr.config.sft import SFTConfig
from rlvr.config.sync import SyncConfig
from rlvr.config.trainer import TrainerConfig


@dataclass
class Config:
    """A whole recipe: one field per section, grouped by role. Components get their section."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)  # on-policy distillation (algorithm.distill_coef)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)  # PPO's value model (algorithm.advantage: gae)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)  # `rlvr sft` only

    def check(self) -> None:
        """Every section's own checks, in the order a recipe reads, then the cross-section ones."""
        for section in (self.run, self.model, self.teacher, self.data, self.rollout, self.algorithm, self.reward,
                        self.logging, self.eval, self.trainer, self.critic, self.checkpoint, self.cluster, self.sync,
                        self.service, self.sft):
            section.check()
        check_across(self)


def load_recipe(path: str | None, overrides: list[str] = (), check: bool = True) -> Config:
    """Load a YAML recipe plus `dotted.key=value` overrides onto the schema, then check it
    (`check=False`: typed only; `rlvr.config.smoke` checks what it makes of it)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        user = _user_layers(path, overrides)
        preset = OmegaConf.select(user, "algorithm.preset", default=None)
        if preset is not None and preset not in PRESETS:
            raise RecipeError("algorithm.preset", f"must be one of {list(PRESETS)}, got {preset!r}")
        staleness = OmegaConf.select(user, "rollout.max_staleness", default=0)
        merged = OmegaConf.merge(OmegaConf.structured(Config), {"algorithm": PRESETS[preset]} if preset else {},
                                 {"algorithm": {"tis_cap": ASYNC_TIS_CAP}} if staleness else {}, user)
        OmegaConf.resolve(merged)
        cfg: Config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise RecipeError(getattr(e, "full_key", None) or "recipe", _message(getattr(e, "msg", str(e)))) from None
    if check:
        cfg.check()
    return cfg


def _user_layers(path: str | None, overrides: list[str]):
    """The recipe file and the overrides, merged (still untyped)."""
    from omegaconf import OmegaConf

    layers = []
    if path is not None:
        if not os.path.isfile(path):
            raise RecipeError(path, "recipe file not found")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as e:  # yaml syntax errors
            raise RecipeError(path, f"not valid YAML: {_first_line(str(e))}") from None
    layers += [_override(item) for item in overrides]
    user = OmegaConf.merge(*layers) if layers else OmegaConf.create({})
    if OmegaConf.select(user, "sync.verify", default=None) is False:  # YAML 1.1 reads a bare `off` as false
        OmegaConf.update(user, "sync.verify", "off")
    return user


def _override(item: str):
    """One `dotted.key=value` override as a layer; a value YAML cannot read, or one with YAML
    anchors or aliases (an override is one value: a "billion laughs" needs them), is a
    RecipeError naming the key."""
    import yaml
    from omegaconf import OmegaConf

    key, eq, value = item.partition("=")
    if not eq or not key:
        raise RecipeError(item[:80], "override must look like dotted.key=value")
    try:
        if any(isinstance(t, (yaml.AnchorToken, yaml.AliasToken)) for t in yaml.scan(value)):
            raise RecipeError(key, "YAML anchors and aliases are not allowed in an override value")
        return OmegaConf.from_dotlist([item])
    except RecipeError:
        raise
    except Exception as e:  # noqa: BLE001 - YAML's and OmegaConf's parse errors, surrogates
        raise RecipeError(key, f"cannot read the value {value[:60]!r}: {_first_line(str(e))}") from None


_CHOICE = re.compile(r"Invalid value '([^\n]*)', expected one of \[([^\]\n]*)\]")


def _message(text: str) -> str:
    """OmegaConf's first line; its message for a value outside a choice type in rlvr's words.

    >>> _message("Invalid value 'adaptor', expected one of ['auto', 'adapter', 'merged']\\n    full_key: x")
    "must be one of ['auto', 'adapter', 'merged'], got 'adaptor'"
    """
    match = _CHOICE.match(_first_line(text))
    if match:
        return f"must be one of [{match.group(2)}], got {match.group(1)!r}"
    return _first_line(text)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def to_yaml(cfg: Config, redact_secrets: bool = True) -> str:
    """The resolved recipe as YAML (what `rlvr validate` prints and `recipe.yaml` holds), with the
    values of secret-looking keys replaced (`rlvr.config.redact`)."""
    from omegaconf import OmegaConf

    from rlvr.config.redact import redact

    data = to_dict(cfg)
    return OmegaConf.to_yaml(OmegaConf.create(redact(data) if redact_secrets else data))


def to_dict(cfg: Config) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg))
