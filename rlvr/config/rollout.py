"""The `rollout` section: the engines that sample completions, and how they sample."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Literal

from rlvr.config.checks import require

Engine = Literal["vllm", "hf"]  # the keys of rlvr.rollout.ENGINES


@dataclass
class RolloutConfig:
    engine: Engine = "vllm"
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

    def check(self) -> None:
        require(self.num_engines >= 1, "rollout.num_engines", "must be >= 1")
        require(self.max_tokens >= 1, "rollout.max_tokens", "must be >= 1")
        require(self.temperature > 0, "rollout.temperature", "must be > 0 (RL needs sampling)")
        require(0 < self.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
        require(self.num_threads >= 1, "rollout.num_threads", "must be >= 1")
        require(self.n >= 1, "rollout.n", "must be >= 1")
        require(self.chunks_per_engine >= 1, "rollout.chunks_per_engine", "must be >= 1")
        require(self.max_staleness in (0, 1), "rollout.max_staleness", f"must be one of [0, 1], got {self.max_staleness!r}")
        require(self.tensor_parallel_size >= 1, "rollout.tensor_parallel_size", "must be >= 1")
        if self.gpus_per_engine:
            require(self.gpus_per_engine >= self.tensor_parallel_size, "rollout.gpus_per_engine",
                    f"an engine with tensor_parallel_size={self.tensor_parallel_size} needs that many GPUs")
