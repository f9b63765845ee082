"""The `reward` section: the verifiers that score each sample, and the workers that run them.

Each `reward.verifiers` item is a mapping: the verifier's `name` (a registered name or a
`package.module:attr` path), the pool's settings for it (`weight`, `timeout_s`,
`failure_score`) and, beside them, the verifier's own options:

    {name: format, weight: 0.1, require_think: true}

`VerifierItem.parse` turns one into typed settings plus its options (the schema keeps the
plain mapping, since the options are the verifier's and not ours to type).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional

from rlvr.config.checks import RecipeError, check_env_names, require

RESERVED = ("name", "weight", "timeout_s", "failure_score")  # the pool's keys; the rest are the verifier's options


@dataclass
class VerifierItem:
    """One `reward.verifiers` item: `key` is how its scores are reported (see `verifier_keys`)."""

    name: str
    key: str
    weight: float = 1.0
    timeout_s: Optional[float] = None  # None: reward.timeout_s
    failure_score: Optional[float] = None  # None: reward.failure_score
    options: dict = field(default_factory=dict)

    @staticmethod
    def parse(items: list[dict], where: str = "reward.verifiers") -> list["VerifierItem"]:
        """Typed items of a verifier list; a bad setting raises RecipeError naming `where[i].<key>`.

        >>> [(v.key, v.weight, v.options) for v in VerifierItem.parse([{"name": "math"}, {"name": "format", "weight": 0.1, "require_think": True}])]
        [('math', 1.0, {}), ('format', 0.1, {'require_think': True})]
        """
        require(len(items) >= 1, where, "at least one verifier is needed")
        out = []
        for i, (item, key) in enumerate(zip(items, verifier_keys(items))):
            at = f"{where}[{i}]"
            require(isinstance(item, dict), at, "each verifier is a mapping like {name: math}")
            require(isinstance(item.get("name"), str) and bool(item["name"]), f"{at}.name", "each verifier needs a name")
            for setting in ("weight", "timeout_s", "failure_score"):
                value = item.get(setting, 1.0)
                require(not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value),
                        f"{at}.{setting}", f"must be a finite number, got {value!r}")
            require(item.get("timeout_s", 1.0) > 0, f"{at}.timeout_s", f"must be > 0, got {item.get('timeout_s')!r}")
            out.append(VerifierItem(item["name"], key, float(item.get("weight", 1.0)), item.get("timeout_s"),
                                    item.get("failure_score"), {k: v for k, v in item.items() if k not in RESERVED}))
        return out


JUDGE_TARGET = "rlvr.reward.builtin.judge:JudgeVerifier"  # the built-in `judge` verifier


@dataclass
class JudgeConfig:
    """`reward.judge`: a judge engine the run starts for `judge` verifiers (`rlvr.agent.judge`),
    served on `host` (loopback) with the rollout endpoint's code; None `model`: no judge engine."""

    model: Optional[str] = None  # a folder, a hub id, or builtin:tiny
    placement: Literal["side", "colocate"] = "side"  # own resources, or in the trainer's placement group bundles
    num_engines: int = 1
    cpus_per_engine: float = 1.0
    gpus_per_engine: float = 0.0
    num_threads: int = 2  # torch threads inside the engine process (CPU)
    max_tokens: int = 64  # a judge's answer at most (a verifier's own max_tokens is capped by it)
    dtype: str = "auto"
    engine_kwargs: Dict[str, Any] = field(default_factory=dict)  # passed to vllm.LLM
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port

    def check(self) -> None:
        if self.model is None:
            return
        require(bool(self.model), "reward.judge.model", "must be a model folder, hub id or builtin:tiny")
        require(self.num_engines >= 1, "reward.judge.num_engines", "must be >= 1")
        require(self.cpus_per_engine >= 0 and self.gpus_per_engine >= 0, "reward.judge.cpus_per_engine",
                "CPUs and GPUs per engine must be >= 0")
        require(self.num_threads >= 1, "reward.judge.num_threads", "must be >= 1")
        require(self.max_tokens >= 1, "reward.judge.max_tokens", "must be >= 1")
        require(0 <= self.port < 65536, "reward.judge.port", "must be a port number (0: any free one)")


@dataclass
class RewardConfig:
    # each item: {name, weight (1.0), timeout_s, failure_score, **options for the verifier} (VerifierItem)
    verifiers: List[Dict[str, Any]] = field(default_factory=lambda: [{"name": "math"}])
    num_workers: int = 1
    timeout_s: float = 5.0  # hard wall-clock limit per sample and verifier
    failure_score: float = 0.0  # score used when a verifier raises, hangs or returns NaN
    max_failure_fraction: float = 0.5  # a verifier failing on more of a step's samples stops the run
    cpus_per_worker: float = 0.5
    gpus_per_worker: float = 0.0  # a GPU (fraction) per reward worker, for a `reward_model` verifier on it
    # child processes per worker that score side by side (a hung verifier call holds one)
    procs_per_worker: int = 2
    # at most this many while every child is stuck on a call and samples wait (rlvr.cluster.pool)
    max_procs_per_worker: int = 16
    # environment variables a verifier process gets beyond the safe allow-list
    # (rlvr.cluster.isolated.ENV_ALLOW), e.g. [OPENAI_API_KEY] for an LLM judge
    env_passthrough: List[str] = field(default_factory=list)
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # a judge engine for `judge` verifiers

    def items(self) -> list[VerifierItem]:
        return VerifierItem.parse(list(self.verifiers))

    def check(self) -> None:
        require(self.num_workers >= 1, "reward.num_workers", "must be >= 1")
        require(self.timeout_s > 0, "reward.timeout_s", "must be > 0")
        require(self.gpus_per_worker >= 0, "reward.gpus_per_worker", "must be >= 0")
        require(1 <= self.procs_per_worker <= 64, "reward.procs_per_worker", "must be in [1, 64]")
        require(self.procs_per_worker <= self.max_procs_per_worker <= 256, "reward.max_procs_per_worker",
                "must be in [reward.procs_per_worker, 256]")
        check_env_names(self.env_passthrough, "reward.env_passthrough")
        require(0 < self.max_failure_fraction <= 1, "reward.max_failure_fraction", "must be in (0, 1]")
        check_verifier_names(self.items(), "reward.verifiers")
        self.judge.check()
        for i, item in enumerate(self.items()):
            require(not is_judge(item.name) or "url" in item.options or self.judge.model is not None,
                    f"reward.verifiers[{i}].url", "a judge verifier needs a judge: set reward.judge.model (the run "
                    "starts one) or give the verifier's url")


def check_verifier_names(items: list[VerifierItem], where: str) -> None:
    """Each name resolves to one registered verifier or a valid `module:attr` path (package
    metadata only: no verifier module is imported)."""
    from rlvr.plugins import resolve_verifier_name

    for i, item in enumerate(items):
        try:
            resolve_verifier_name(item.name)
        except LookupError as e:
            raise RecipeError(f"{where}[{i}].name", str(e)) from None


def is_judge(name: str) -> bool:
    """Whether a verifier name means the built-in judge (package metadata only)."""
    from rlvr.plugins import resolve_verifier_name

    try:
        return resolve_verifier_name(name) == JUDGE_TARGET
    except LookupError:
        return False


def verifier_keys(verifiers: list[dict]) -> list[str]:
    """The result key of each verifier item: its name, or `name#i` (i = its index in the
    list) when two items share a name.

    >>> verifier_keys([{"name": "math"}, {"name": "format"}, {"name": "math"}])
    ['math#0', 'format', 'math#2']
    """
    names = [v.get("name") if isinstance(v, dict) else None for v in verifiers]
    return [name if names.count(name) == 1 else f"{name}#{i}" for i, name in enumerate(names)]
