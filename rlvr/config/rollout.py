"""The `rollout` section: the engines that sample completions, how they sample, and multi-turn
episodes with tools (`rollout.multi_turn`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional

from rlvr.config.checks import RecipeError, check_env_names, require

Engine = Literal["vllm", "hf"]  # the keys of rlvr.rollout.ENGINES
ToolCallParser = Literal["hermes", "llama3_json"]  # the keys of rlvr.tools.calls.PARSERS


@dataclass
class ToolItem:
    """One `rollout.multi_turn.tools` item: a tool's name (registered in `rlvr.tools` or a
    `module:attr` path), its hard per-call timeout, and the tool's own options."""

    name: str
    timeout_s: Optional[float] = None  # None: rollout.multi_turn.tool_timeout_s
    options: dict = field(default_factory=dict)

    @staticmethod
    def parse(items: list, where: str = "rollout.multi_turn.tools") -> list["ToolItem"]:
        out, names = [], set()
        for i, item in enumerate(items):
            at = f"{where}[{i}]"
            item = {"name": item} if isinstance(item, str) else item
            require(isinstance(item, dict), at, "each tool is a name or a mapping like {name: calc, timeout_s: 5}")
            require(isinstance(item.get("name"), str) and bool(item["name"]), f"{at}.name", "each tool needs a name")
            require(item["name"] not in names, f"{at}.name", f"tool {item['name']!r} is listed twice")
            names.add(item["name"])
            timeout = item.get("timeout_s")
            require(timeout is None or (not isinstance(timeout, bool) and isinstance(timeout, (int, float))
                                        and timeout > 0), f"{at}.timeout_s", f"must be a number > 0, got {timeout!r}")
            out.append(ToolItem(item["name"], timeout, {k: v for k, v in item.items() if k not in ("name", "timeout_s")}))
        return out


@dataclass
class MultiTurnConfig:
    """Multi-turn, tool-using episodes (`rlvr.rollout.episodes`); on when `enabled` is true."""

    enabled: bool = False
    max_turns: int = 4  # assistant turns per episode at most
    max_total_tokens: int = 1024  # prompt + every turn and observation; the model's max length at most
    tools: List[Any] = field(default_factory=list)  # {name, timeout_s, **options} or a name (ToolItem)
    env: str = "tools"  # the environment: a name registered in `rlvr.envs`, or `module:attr`
    env_options: Dict[str, Any] = field(default_factory=dict)
    parser: ToolCallParser = "hermes"  # how tool calls are read from a turn (rlvr.tools.calls.PARSERS)
    tool_timeout_s: float = 10.0  # hard wall-clock limit per tool call
    tool_workers: int = 1  # tool workers (Ray actors)
    tool_procs: int = 4  # child processes per tool worker: calls that run side by side (a hung one blocks only its own)
    tool_cpus_per_worker: float = 0.25
    # environment variables a tool process gets beyond the safe allow-list (rlvr.cluster.isolated.ENV_ALLOW)
    tool_env_passthrough: List[str] = field(default_factory=list)
    on_tool_error: Literal["observe", "end"] = "observe"  # a failed call: its error as the observation, or end
    max_observation_chars: int = 4096  # a longer tool result is cut (the cut is said in the observation)
    truncated_reward: Optional[float] = None  # the reward of an episode cut by max_turns / max_total_tokens
    env_reward_weight: float = 1.0  # the environment's episode reward is added with this weight

    def tool_items(self) -> list[ToolItem]:
        return ToolItem.parse(list(self.tools))

    def check(self) -> None:
        if not self.enabled:
            return
        require(self.max_turns >= 1, "rollout.multi_turn.max_turns", "must be >= 1")
        require(self.max_total_tokens >= 2, "rollout.multi_turn.max_total_tokens", "must be >= 2")
        require(self.tool_timeout_s > 0, "rollout.multi_turn.tool_timeout_s", "must be > 0")
        require(self.tool_workers >= 1, "rollout.multi_turn.tool_workers", "must be >= 1")
        require(1 <= self.tool_procs <= 64, "rollout.multi_turn.tool_procs", "must be in [1, 64]")
        check_env_names(self.tool_env_passthrough, "rollout.multi_turn.tool_env_passthrough")
        require(self.max_observation_chars >= 64, "rollout.multi_turn.max_observation_chars", "must be >= 64")
        from rlvr.plugins import resolve_env_name, resolve_tool_name  # package metadata only

        for i, item in enumerate(self.tool_items()):
            try:
                resolve_tool_name(item.name)
            except LookupError as e:
                raise RecipeError(f"rollout.multi_turn.tools[{i}].name", str(e)) from None
        try:
            resolve_env_name(self.env)
        except LookupError as e:
            raise RecipeError("rollout.multi_turn.env", str(e)) from None


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
    multi_turn: MultiTurnConfig = field(default_factory=MultiTurnConfig)  # tool-using episodes
    # Train any agent (rlvr.agent): `module:attr` (or a name registered in `rlvr.agents`) of
    # `async def rollout(client, row)`, run in agent workers against the OpenAI-compatible
    # endpoint; or "external": outside processes take episodes over HTTP. None: off.
    agent: Optional[str] = None
    agent_workers: int = 1  # agent worker actors (in-process agents)
    agent_concurrency: int = 64  # episodes each agent worker runs at once
    agent_timeout_s: float = 300.0  # an episode without a reward by then is dropped (counted)
    agent_reward_weight: float = 1.0  # the agent's own reward is added to the verifiers' with this weight
    agent_host: str = "127.0.0.1"  # where the endpoint listens; beyond loopback it needs the service token
    agent_port: int = 0  # 0: any free port (its URL is in status.json and on the console)

    def check_agent(self) -> None:
        if self.agent is None:
            return
        require(not self.multi_turn.enabled, "rollout.agent",
                "an agent runs its own turns: turn rollout.multi_turn.enabled off (or rollout.agent off)")
        if self.agent != "external":
            from rlvr.plugins import resolve_agent_name  # package metadata only

            try:
                resolve_agent_name(self.agent)
            except LookupError as e:
                raise RecipeError("rollout.agent", f"{e} (or 'external' for agents outside the run)") from None
        require(self.agent_workers >= 1, "rollout.agent_workers", "must be >= 1")
        require(1 <= self.agent_concurrency <= 4096, "rollout.agent_concurrency", "must be in [1, 4096]")
        require(self.agent_timeout_s > 0, "rollout.agent_timeout_s", "must be > 0")
        require(0 <= self.agent_port <= 65535, "rollout.agent_port", "must be a TCP port (0: any free port)")

    def length_budget(self) -> int:
        """The most tokens the model may write for one sample: `max_tokens`, or for multi-turn
        episodes `multi_turn.max_total_tokens` (DAPO's overlong penalty measures against it)."""
        return self.multi_turn.max_total_tokens if self.multi_turn.enabled else self.max_tokens

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
        self.multi_turn.check()
        self.check_agent()
        if self.gpus_per_engine and self.tensor_parallel_size > 1:  # one engine may take a GPU fraction (colocate)
            require(self.gpus_per_engine >= self.tensor_parallel_size, "rollout.gpus_per_engine",
                    f"an engine with tensor_parallel_size={self.tensor_parallel_size} needs that many GPUs")
