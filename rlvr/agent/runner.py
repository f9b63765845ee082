"""A batch of agent episodes, from opening them to their rewards (`rollout.agent`).

    open      rollout.n episodes per prompt on the board, each with an id and a seed
    run       in-process: the agent workers run the user's `rollout(client, row)` on them;
              `rollout.agent: external`: outside processes take them over HTTP
    wait      until every episode has its reward or passed `rollout.agent_timeout_s`
    finish    the episodes that failed (timeout, exception, no call at all) are dropped and
              counted; each other one becomes one sample whose `segments` are its calls
    score     the verifiers score the episode's final answer (the agent's `final`, else the
              last assistant message); the agent's own reward is added with
              `rollout.agent_reward_weight`

Advantages are group-relative over a prompt's episodes, as for single-turn samples, and
every segment of an episode trains with its episode's advantage (`Completion.pieces`).
"""

from __future__ import annotations

from rlvr.agent.board import AgentEpisode, segments
from rlvr.types import Completion, Prompt, SampleReward, SamplingSpec

FAILURE_KINDS = ("timeout", "exception", "invalid", "no_calls")


class AgentRunner:
    """`board`: the `EpisodeBoard` the endpoint serves; `agents`: the `AgentGroup` (None: outside
    agents take the episodes); `reward_weight`: `rollout.agent_reward_weight`."""

    def __init__(self, board, agents, reward_weight: float = 1.0):
        self.board, self.agents, self.reward_weight = board, agents, reward_weight

    def run(self, prompts: list[Prompt], spec: SamplingSpec, timer) -> list[AgentEpisode]:
        """Every episode of `prompts` (`spec.n` each; greedy when `spec.temperature` is 0), finished."""
        episodes = self.board.open(prompts, spec.n, spec.seed, greedy=spec.temperature == 0,
                                   hand_out=self.agents is None)
        with timer("generate"):
            pending = self.agents.start(episodes) if self.agents is not None else []
            try:
                self.board.wait(episodes)
            finally:
                self.board.finish(episodes)
            if pending:
                self.agents.settle(pending)
        for e in episodes:
            if e.error is None and not e.calls:
                e.error = "no_calls: the agent made no call to the endpoint"
        return episodes

    def play_and_score(self, rollouts, rewards, prompts: list[Prompt], spec: SamplingSpec, chunks_per_engine: int,
                       timer, metrics: dict | None = None) -> tuple[list[Completion], list[SampleReward]]:
        """The kept episodes as completions with their rewards, in prompt order; `metrics` (when
        given) receives the `agent/*` counts, dropped episodes included."""
        episodes = self.run(prompts, spec, timer)
        kept = [e for e in episodes if e.error is None]
        completions = [episode_completion(e) for e in kept]
        with timer("reward"):
            scored = rewards.collect(rewards.submit(prompts, completions)) if completions else []
        for e, r in zip(kept, scored):
            if e.reward is not None:
                r.scores["agent"] = e.reward
                r.total += self.reward_weight * e.reward
        if metrics is not None:
            metrics.update(agent_metrics(episodes))
        return completions, scored


def episode_completion(e: AgentEpisode) -> Completion:
    """A finished episode as one sample: its calls as training segments, the final answer as text."""
    segs = segments(e.calls)
    last = e.calls[-1]
    messages = [*(last.messages or []), {"role": "assistant", "content": last.text}]
    return Completion(e.prompt_index, [], [], last.text if e.final is None else e.final, last.finish_reason,
                      min(s["weight_version"] for s in segs),
                      episode={"messages": messages, "turns": len(e.calls), "tool_calls": 0, "truncated": False,
                               "agent": {"id": e.id, "calls": len(e.calls), "segments": len(segs),
                                         "latency_s": round(e.latency_s, 3), "reward": e.reward}},
                      segments=segs)


def agent_metrics(episodes: list[AgentEpisode]) -> dict:
    """`agent/*` of a batch: episodes kept, calls and segments per kept episode, the mean time
    to a reward, and the dropped ones by kind (`agent/failures/<kind>`)."""
    kept = [e for e in episodes if e.error is None]
    n = max(1, len(kept))
    out = {"agent/episodes": float(len(kept)), "agent/dropped": float(len(episodes) - len(kept)),
           "agent/calls_per_episode": sum(len(e.calls) for e in kept) / n,
           "agent/segments_per_episode": sum(len(segments(e.calls)) for e in kept) / n,
           "agent/latency": sum(e.latency_s for e in kept) / n}
    kinds = [failure_kind(e.error) for e in episodes if e.error is not None]
    for kind in FAILURE_KINDS:
        out[f"agent/failures/{kind}"] = float(kinds.count(kind))
    return out


def failure_kind(error: str) -> str:
    """The kind of an episode's error ("timeout: ..." -> timeout); any other text is an exception.

    >>> failure_kind("timeout: no reward within 5 s"), failure_kind("my agent gave up")
    ('timeout', 'exception')
    """
    kind = error.split(":", 1)[0]
    return kind if kind in FAILURE_KINDS else "exception"
