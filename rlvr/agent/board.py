"""Agent episodes and their captured engine calls: the board the endpoint and the loop share.

The loop opens a step's episodes (`open`: `rollout.n` per prompt, each with an id, a seed
and its data row); agents run them (agent workers in-process, or outside processes that
`take` them over HTTP); every chat/completions call made with an episode's id is
`record`ed exactly as the engine served it (the prompt token ids it saw, the token ids it
sampled, their sampling log-probs and the weight version); the agent's reward `close`s the
episode. The loop `wait`s until every episode is closed or past its deadline, and `finish`
turns the closed ones into training samples (`rlvr.agent.runner`).

Non-append-only histories: each call is its own training sequence (`segments`), so an
agent that summarises its history, runs sub-agents or makes parallel calls trains on
exactly the tokens the engine saw. Consecutive calls that extend each other exactly (the
next call's prompt starts with the previous call's prompt and sampled tokens) are merged
into one sequence: the tokens in between are context (loss mask 0), one forward instead of
many.

Thread-safe: the endpoint records from its server thread, the loop waits in its own.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from rlvr.types import Prompt

CALL_SEED_STRIDE = 7_919_993  # call k of an episode samples with the episode's seed + k * this


@dataclass
class Call:
    """One engine call (one choice of it) captured for an episode."""

    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    weight_version: int
    finish_reason: str
    text: str
    messages: list[dict] | None = None  # chat calls: the conversation the agent sent


@dataclass
class AgentEpisode:
    id: str
    prompt_index: int
    prompt: Prompt
    seed: int | None
    greedy: bool
    opened: float
    deadline: float  # when it is dropped if not closed (moved on when an outside agent takes it)
    calls: list[Call] = field(default_factory=list)
    issued: int = 0  # calls started (their seeds)
    taken: bool = False
    closed: bool = False
    reward: float | None = None
    final: str | None = None
    error: str | None = None  # why the agent failed ("timeout: ...", "exception: ...")
    latency_s: float = 0.0

    def row(self) -> dict:
        """The data row an agent receives."""
        return {"messages": [dict(m) for m in self.prompt.messages], "prompt": self.prompt.text,
                "answer": self.prompt.answer, "metadata": dict(self.prompt.metadata)}


class EpisodeBoard:
    """Open episodes by id. `timeout_s`: `rollout.agent_timeout_s`, each episode's deadline."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._open: dict[str, AgentEpisode] = {}
        self._waiting: deque[AgentEpisode] = deque()  # not yet taken by an outside agent
        self._changed = threading.Condition()

    def open(self, prompts: list[Prompt], n: int, seed: int | None, greedy: bool, hand_out: bool) -> list[AgentEpisode]:
        """`n` episodes per prompt (episode j of the batch samples with `seed + j * n`...); with
        `hand_out` they wait for outside agents (`take`)."""
        now = time.monotonic()
        episodes = [AgentEpisode(f"ep-{secrets.token_hex(8)}", i, p, None if seed is None else seed + j,
                                 greedy, now, now + self.timeout_s)
                    for j, (i, p) in enumerate((i, p) for i, p in enumerate(prompts) for _ in range(n))]
        with self._changed:
            for e in episodes:
                self._open[e.id] = e
            if hand_out:
                self._waiting.extend(episodes)
        return episodes

    def take(self) -> AgentEpisode | None:
        """The next episode for an outside agent (its deadline starts now), or None."""
        with self._changed:
            while self._waiting:
                e = self._waiting.popleft()
                if e.id in self._open and not e.closed:
                    e.taken, e.deadline = True, time.monotonic() + self.timeout_s
                    return e
        return None

    def start_call(self, episode_id: str) -> tuple[AgentEpisode, int | None]:
        """An open episode about to call the engine, and the seed of this call. KeyError: the
        episode is unknown, closed or past its deadline."""
        with self._changed:
            e = self._open.get(episode_id)
            if e is None or e.closed or time.monotonic() > e.deadline:
                raise KeyError(episode_id)
            k, e.issued = e.issued, e.issued + 1
            return e, None if e.seed is None else e.seed + k * CALL_SEED_STRIDE

    def record(self, episode_id: str, calls: list[Call]) -> bool:
        """Keep an episode's served calls; False if it closed meanwhile (they are not kept)."""
        with self._changed:
            e = self._open.get(episode_id)
            if e is None or e.closed:
                return False
            e.calls += calls
            return True

    def close(self, episode_id: str, reward: float | None = None, final: str | None = None,
              error: str | None = None) -> str:
        """The agent's result: "closed", or "unknown" / "already closed" / "expired"."""
        with self._changed:
            e = self._open.get(episode_id)
            if e is None:
                return "unknown"
            if e.closed:
                return "already closed"
            if time.monotonic() > e.deadline:
                return "expired"
            e.closed, e.reward, e.final, e.error = True, reward, final, error
            e.latency_s = time.monotonic() - e.opened
            self._changed.notify_all()
            return "closed"

    def wait(self, episodes: list[AgentEpisode]) -> None:
        """Until every episode is closed or past its deadline."""
        with self._changed:
            while True:
                now = time.monotonic()
                left = [e for e in episodes if not e.closed and e.deadline > now]
                if not left:
                    return
                self._changed.wait(timeout=min(e.deadline for e in left) - now + 0.01)

    def finish(self, episodes: list[AgentEpisode]) -> None:
        """Take the episodes off the board: later calls or rewards for them are refused."""
        with self._changed:
            for e in episodes:
                self._open.pop(e.id, None)
                if not e.closed:
                    e.closed, e.error = True, e.error or f"timeout: no reward within {self.timeout_s:g} s"
            waiting = set(id(e) for e in episodes)
            self._waiting = deque(e for e in self._waiting if id(e) not in waiting)


def segments(calls: list[Call]) -> list[dict]:
    """The training sequences of an episode's calls: a call whose prompt starts with the
    previous sequence (prompt and tokens) extends it (the tokens between are context, mask 0);
    any other starts a new one.

    >>> a = Call([1, 2], [3, 4], [-0.1, -0.2], 1, "stop", "")
    >>> b = Call([1, 2, 3, 4, 9], [5], [-0.5], 1, "stop", "")        # appends: merged
    >>> c = Call([1, 7], [8], [-0.8], 2, "stop", "")                  # rewrites its history: its own
    >>> [(s["prompt_ids"], s["token_ids"], s["mask"]) for s in segments([a, b, c])]
    [([1, 2], [3, 4, 9, 5], [1, 1, 0, 1]), ([1, 7], [8], [1])]
    """
    out: list[dict] = []
    for call in calls:
        last = out[-1] if out else None
        if last is not None:
            seen = last["prompt_ids"] + last["token_ids"]
            if len(call.prompt_ids) >= len(seen) and call.prompt_ids[:len(seen)] == seen:
                gap = call.prompt_ids[len(seen):]
                last["token_ids"] += gap + call.token_ids
                last["logprobs"] += [0.0] * len(gap) + call.logprobs
                last["mask"] += [0] * len(gap) + [1] * len(call.token_ids)
                last["weight_version"] = min(last["weight_version"], call.weight_version)
                continue
        out.append({"prompt_ids": list(call.prompt_ids), "token_ids": list(call.token_ids),
                    "logprobs": list(call.logprobs), "mask": [1] * len(call.token_ids),
                    "weight_version": call.weight_version})
    return out
