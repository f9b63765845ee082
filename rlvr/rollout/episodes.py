"""Multi-turn, tool-using episodes (`rollout.multi_turn`): every episode of a batch advances turn
by turn, with one engine call per turn across all live episodes.

    turn 0:  the prompt (rendered with the tools' schemas), rollout.n samples per prompt
    then:    the turn's tool calls are read (`rollout.multi_turn.parser`), the environment says
             which to run (`rlvr.tools.env`), the tool workers run them (isolated, hard timeouts),
             their results are rendered by the chat template and appended, and every episode
             still going is sampled again, until a turn without a tool call, `max_turns` or
             `max_total_tokens`

Token-exact: each turn's sampled token ids are kept as sampled (never decoded and
tokenized again), with their sampling log-probs; only the observations and the turn
boundaries between them are tokenized (`rlvr.data.prompts.observation_tokens`). So the
trainer sees exactly the sequence the engine saw: the model's earlier turns verbatim (a
template that drops earlier `<think>` blocks when it re-renders a conversation is never
asked to), then the observations as the template writes them. The result is one
`Completion` per episode: its tokens after the prompt, `mask` 1 on sampled tokens and 0 on
observation and template tokens (context only: no loss, not counted in any normaliser),
`text` the final answer the verifiers score, `episode` the conversation and its counts.

The tool calls of an engine call's chunk start as soon as the chunk comes back, while the
other chunks are still generating (with `rollout.chunks_per_engine` > 1 or several
engines). Seeds: turn k of a step uses the step's seed + k * 7,919,993, each request adding
its index among the requests of the turn, so a step's episodes are the same however the run
got there (resumed or not).

An episode ends when a turn has no tool call (or the environment runs none), when a turn
is cut by `rollout.max_tokens`, at `max_turns` or `max_total_tokens` (those three are
`truncated`), or when a tool fails and `on_tool_error` is `end`. A call that cannot be read
or fails gets its error as the observation, and is counted by kind.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from rlvr.types import Completion, Prompt, SamplingSpec

TURN_SEED_STRIDE = 7_919_993


@dataclass
class Turn:
    """One assistant turn as the environment sees it."""

    index: int
    text: str
    calls: list = field(default_factory=list)
    row: dict = field(default_factory=dict)  # the data row: answer, metadata


@dataclass
class Episode:
    prompt_index: int
    prompt: Prompt
    messages: list[dict]
    env: object = None  # its own environment object
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    turns: int = 0
    tool_calls: int = 0
    valid_tool_calls: int = 0
    tool_failures: dict = field(default_factory=dict)
    observation_tokens: int = 0
    truncated: bool = False
    done: bool = False
    final_text: str = ""
    finish_reason: str = "stop"
    weight_version: int = 0
    calls: list = field(default_factory=list)  # the calls to run after the latest turn
    end_of_turn: str = ""  # the text of the latest turn's last token
    env_reward: float | None = None
    env_error: str | None = None  # why the environment's reward could not be had

    @property
    def length(self) -> int:
        return len(self.prompt.token_ids) + len(self.token_ids)

    def fail(self, kind: str) -> None:
        self.tool_failures[kind] = self.tool_failures.get(kind, 0) + 1

    def completion(self) -> Completion:
        return Completion(self.prompt_index, self.token_ids, self.logprobs, self.final_text, self.finish_reason,
                          self.weight_version, mask=self.mask,
                          episode={"messages": self.messages, "turns": self.turns, "tool_calls": self.tool_calls,
                                   "valid_tool_calls": self.valid_tool_calls, "tool_failures": dict(self.tool_failures),
                                   "observation_tokens": self.observation_tokens, "truncated": self.truncated,
                                   "env_reward": self.env_reward, "env_error": self.env_error})

    @property
    def row(self) -> dict:
        return {"answer": self.prompt.answer, "metadata": self.prompt.metadata}


class EpisodeRunner:
    """Runs a batch's episodes. `cfg`: `rollout.multi_turn`; `make_env`: builds an environment
    object (one per episode, `rlvr.tools.env.env_factory`); `tools`: a `ToolGroup` (or anything
    with its `submit` / `collect`); `tokenizer` and `template_kwargs`: how observations are
    rendered; `max_len`: the engines' max length."""

    def __init__(self, cfg, make_env, tools, tokenizer, template_kwargs: dict | None = None,
                 max_len: int | None = None):
        from rlvr.tools.calls import PARSERS

        self.cfg, self.make_env, self.tools, self.tokenizer = cfg, make_env, tools, tokenizer
        self.template_kwargs, self.parse = dict(template_kwargs or {}), PARSERS[cfg.parser]
        self.max_total = min(cfg.max_total_tokens, max_len or cfg.max_total_tokens)
        self._warned: set[str] = set()

    def _warn_once(self, message: str) -> None:
        """Print an environment's failure the first time its kind is seen (each one is counted in
        `multi_turn/tool_failures/exception`)."""
        kind = message.split(":", 1)[0]
        if kind not in self._warned:
            self._warned.add(kind)
            print(f"[rlvr] multi-turn: {message} (its episode ends; later ones are counted, not printed)", flush=True)

    def run(self, rollouts, prompts: list[Prompt], spec: SamplingSpec, chunks_per_engine: int, timer) -> list[Completion]:
        """`spec.n` episodes per prompt, grouped by prompt in order, as Completions."""
        episodes = [Episode(i, p, [dict(m) for m in p.messages], self.make_env())
                    for i, p in enumerate(prompts) for _ in range(spec.n)]
        owners = {id(p): episodes[i * spec.n:(i + 1) * spec.n] for i, p in enumerate(prompts)}
        requests, turn = list(prompts), 0
        while requests:
            longest = max(len(r.token_ids) for r in requests)
            turn_spec = dataclasses.replace(spec, n=spec.n if turn == 0 else 1,
                                            max_tokens=max(1, min(spec.max_tokens, self.max_total - longest)),
                                            seed=None if spec.seed is None else spec.seed + turn * TURN_SEED_STRIDE)
            with timer("generate"):
                started = [self._turn(owners, chunk, completions, turn)
                           for _, chunk, completions in rollouts.stream(requests, turn_spec, chunks_per_engine)]
            with timer("tools"):
                for who, pending in started:
                    self._observe(who, self.tools.collect(pending) if pending else [])
            turn += 1
            live = [e for e in episodes if not e.done]
            requests = [Prompt(e.prompt.text, e.prompt.token_ids + e.token_ids, e.prompt.answer) for e in live]
            owners = {id(r): [e] for r, e in zip(requests, live)}
        for e in episodes:
            self._env_reward(e)
        return [e.completion() for e in episodes]

    @staticmethod
    def _env_reward(e: Episode) -> None:
        view = EpisodeView(e.messages, e.row, e.turns, e.tool_calls, e.truncated)
        try:
            reward = e.env.reward(view)
            reward = None if reward is None else float(reward)
        except Exception as err:  # noqa: BLE001 - a broken environment reward is a failure of this sample
            e.env_error = f"exception: {type(err).__name__}: {err}"
            return
        if reward is not None and not math.isfinite(reward):
            e.env_error = f"invalid: the environment's reward is {reward}"
        else:
            e.env_reward = reward

    def _turn(self, owners: dict, chunk: list, completions: list[Completion], turn: int):
        """Record a chunk's sampled turns and start their tool calls; returns (episodes with calls, pending)."""
        seen: dict[int, int] = {}
        who, calls = [], []
        for c in completions:
            request = chunk[c.prompt_index]
            k = seen[id(request)] = seen.get(id(request), -1) + 1
            e = owners[id(request)][k]
            self._record(e, c, turn)
            if e.calls:
                who.append(e)
                calls += [(call.name, call.arguments) for call in e.calls if call.error is None]
        return who, (self.tools.submit(calls) if calls else None)

    def _record(self, e: Episode, c: Completion, turn: int) -> None:
        """Append a sampled turn to its episode and decide what comes next."""
        from rlvr.tools.calls import ToolCall

        e.token_ids += c.token_ids
        e.logprobs += c.logprobs
        e.mask += [1] * len(c.token_ids)
        e.turns += 1
        e.weight_version = c.weight_version if turn == 0 else e.weight_version
        e.messages.append({"role": "assistant", "content": c.text})
        e.final_text, e.finish_reason, e.calls = c.text, c.finish_reason, []
        e.end_of_turn = self.tokenizer.decode(c.token_ids[-1:]) if c.token_ids else ""
        parsed = self.parse(c.text)
        e.tool_calls += len(parsed)
        if c.finish_reason == "length" or e.length >= self.max_total:
            e.truncated = e.done = True
            return
        try:
            e.calls = list(e.env.step(Turn(turn, c.text, parsed, e.row)))
            if not all(isinstance(call, ToolCall) for call in e.calls):
                raise TypeError("step must return a list of rlvr.tools.calls.ToolCall")
        except Exception as err:  # noqa: BLE001 - an environment bug ends its episode, not the run
            self._warn_once(f"the environment's step raised {type(err).__name__}: {err}")
            e.fail("exception")
            e.done = True
            return
        if not e.calls:
            e.done = True
        elif e.turns >= self.cfg.max_turns:
            e.truncated, e.done, e.calls = True, True, []

    def _observe(self, who: list[Episode], results: list) -> None:
        """Give each episode its calls' results (in order), as observation tokens; or end it."""
        from rlvr.data.prompts import observation_tokens
        from rlvr.tools.worker import ToolResult

        results = iter(results)
        for e in who:
            got = [ToolResult(f"error: {call.error}", call.error) if call.error else next(results) for call in e.calls]
            for result in got:
                if result.failure is None:
                    e.valid_tool_calls += 1
                else:
                    e.fail(result.failure.split(":", 1)[0])
            if self.cfg.on_tool_error == "end" and any(r.failure for r in got):
                e.done = True
                continue
            try:
                messages = list(e.env.observe(e.calls, got))
                tokens = observation_tokens(self.tokenizer, messages, e.end_of_turn, self.template_kwargs)
            except Exception as err:  # noqa: BLE001 - a broken environment or template ends its episode
                self._warn_once(f"observing a turn failed: {type(err).__name__}: {err}")
                e.fail("exception")
                e.done = True
                continue
            if e.length + len(tokens) >= self.max_total:
                e.truncated = e.done = True
                continue
            e.messages += messages
            e.token_ids += tokens
            e.logprobs += [0.0] * len(tokens)
            e.mask += [0] * len(tokens)
            e.observation_tokens += len(tokens)

    def play_and_score(self, rollouts, rewards, prompts: list[Prompt], spec: SamplingSpec, chunks_per_engine: int,
                       timer, metrics: dict | None = None):
        """The episodes of `prompts`, then their rewards: the verifiers score each final answer
        (the whole conversation is in the sample's `metadata["messages"]`), the environment
        may add a reward of its own (`env_reward_weight`), and a truncated episode gets
        `truncated_reward` when one is set. Returns (completions, rewards) in prompt order."""
        completions = self.run(rollouts, prompts, spec, chunks_per_engine, timer)
        with timer("reward"):
            scored = rewards.collect(rewards.submit(prompts, completions))
        return completions, [self._adjust(c, r) for c, r in zip(completions, scored)]

    def _adjust(self, c: Completion, r):
        extra = c.episode["env_reward"]
        if c.episode["env_error"]:
            r.failures["env"] = c.episode["env_error"]
        if extra is not None:
            r.scores["env"] = extra
            r.total += self.cfg.env_reward_weight * extra
        if c.episode["truncated"] and self.cfg.truncated_reward is not None:
            r.total = float(self.cfg.truncated_reward)
        return r


@dataclass
class EpisodeView:
    """What an environment's `reward` sees of a finished episode."""

    messages: list[dict]
    row: dict
    turns: int
    tool_calls: int
    truncated: bool


def episode_metrics(completions: list[Completion]) -> dict:
    """`multi_turn/*` of a batch of episodes: mean turns, tool calls and observation tokens per
    episode, the share with a valid tool call (one that ran without a failure) and the share
    truncated, and each kind of tool failure counted."""
    episodes = [c.episode for c in completions if c.episode is not None and "agent" not in c.episode]
    if not episodes:
        return {}
    n = len(episodes)
    out = {"multi_turn/turns": sum(e["turns"] for e in episodes) / n,
           "multi_turn/tool_calls": sum(e["tool_calls"] for e in episodes) / n,
           "multi_turn/valid_tool_call": sum(e["valid_tool_calls"] > 0 for e in episodes) / n,
           "multi_turn/truncated": sum(e["truncated"] for e in episodes) / n,
           "multi_turn/observation_tokens": sum(e["observation_tokens"] for e in episodes) / n}
    for kind in ("invalid", "exception", "timeout"):
        out[f"multi_turn/tool_failures/{kind}"] = float(sum(e["tool_failures"].get(kind, 0) for e in episodes))
    return out
