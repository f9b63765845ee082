"""Plain data passed between the loop, rollout engines, reward workers and trainer ranks.

Everything here is a small dataclass of Python scalars and lists, so it pickles
cheaply through Ray and can be written to JSONL as-is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Prompt:
    """One rendered prompt: text, its token ids, the reference answer, extra fields (`rlvr.data.prompts`)."""

    text: str
    token_ids: list[int]
    answer: str
    metadata: dict = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)  # the chat messages it was rendered from


@dataclass
class SamplingSpec:
    """How one generate call samples. `n` completions per prompt."""

    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    ignore_eos: bool = False


@dataclass
class Completion:
    """One sampled completion of one prompt, as returned by a rollout engine."""

    prompt_index: int  # index of the prompt in the generate call's list
    token_ids: list[int]  # generated tokens (eos included when it was sampled)
    logprobs: list[float]  # sampling logprob of each generated token
    text: str  # decoded completion, special tokens skipped
    finish_reason: str  # "stop" | "length"
    weight_version: int = 0  # the engine's weight version that generated it (0: the starting model)
    # multi-turn episodes (rlvr.rollout.episodes): token_ids are every turn and observation after the
    # prompt; mask says which were sampled (1) and which are observations and template tokens (0,
    # their logprobs are 0); text is the final answer; episode holds the conversation and its counts
    mask: list[int] | None = None
    episode: dict | None = None
    # agent episodes (rlvr.agent): the captured engine calls as training sequences, each
    # {"prompt_ids", "token_ids", "logprobs", "mask", "weight_version"}; token_ids above are then empty
    segments: list[dict] | None = None

    @property
    def num_sampled(self) -> int:
        """The tokens the model wrote (an episode's observations not counted)."""
        if self.segments is not None:
            return int(sum(sum(s["mask"]) for s in self.segments))
        return len(self.token_ids) if self.mask is None else int(sum(self.mask))

    def pieces(self, prompt_ids: list[int]) -> list[tuple[list[int], list[int], list[float], list[int] | None]]:
        """What the trainer trains on, as (prompt ids, completion ids, sampling log-probs, loss mask):
        this completion after `prompt_ids` (its prompt's), or an agent episode's segments."""
        if self.segments is None:
            return [(prompt_ids, self.token_ids, self.logprobs, self.mask)]
        return [(s["prompt_ids"], s["token_ids"], s["logprobs"], s["mask"]) for s in self.segments]


@dataclass
class AgentResult:
    """What an agent's `rollout(client, row)` may return instead of a plain reward (`rlvr.agent`):
    its reward (None: the verifiers' only) and the final answer the verifiers score (None: the
    episode's last assistant message)."""

    reward: float | None = None
    final: str | None = None


@dataclass
class RewardInput:
    """What a verifier sees of one sample.

    `prompt`: the prompt as the model saw it, i.e. the chat-templated text (system prompt and
    the template's special tokens included) unless the recipe sets `data.apply_chat_template:
    false` (then the row's prompt text, after the system prompt if one is set). `completion`:
    the model's text (a multi-turn episode: its final answer). `answer`: the row's reference answer, as a string. `metadata`: the
    dataset row's other fields (everything but the prompt / messages / answer keys) plus
    `source`, the file (or dataset) and row it came from (`"train.jsonl row 7"`); a multi-turn
    episode adds `messages`, its whole conversation.
    """

    prompt: str
    completion: str
    answer: str
    metadata: dict = field(default_factory=dict)

    @staticmethod
    def of(prompt: Prompt, completion: Completion) -> "RewardInput":
        """One sample's: the prompt, the completion (a multi-turn episode's final answer; its whole
        conversation in `metadata["messages"]`), the reference answer."""
        metadata = dict(prompt.metadata)
        if completion.episode is not None:
            metadata["messages"] = completion.episode["messages"]
        return RewardInput(prompt.text, completion.text, prompt.answer, metadata)


@dataclass
class Score:
    """A verifier's verdict on one sample.

    `value` is the score. `parts` holds optional named sub-scores. `failure` is
    set (to a human-readable reason) when the verifier could not score the
    sample at all (exception, timeout, NaN); a wrong answer is not a failure.
    """

    value: float
    parts: dict[str, float] = field(default_factory=dict)
    failure: str | None = None

    @staticmethod
    def coerce(result: object) -> "Score":
        """Turn a verifier's return value (Score, float, int, bool) into a Score."""
        if isinstance(result, Score):
            score = result
        elif isinstance(result, (bool, int, float)):
            score = Score(float(result))
        else:
            return Score(0.0, failure=f"invalid: verifier returned {type(result).__name__}, expected Score or float")
        if score.failure is None and not math.isfinite(score.value):
            return Score(0.0, failure=f"invalid: verifier returned non-finite score {score.value!r}")
        return score


@dataclass
class SampleReward:
    """Combined reward of one sample over every configured verifier."""

    total: float  # weighted sum of verifier values (failure_score where one failed)
    scores: dict[str, float]  # verifier name -> value used in the total
    failures: dict[str, str]  # verifier name -> reason, for verifiers that failed
    parts: dict[str, dict[str, float]] = field(default_factory=dict)  # verifier name -> its named sub-scores
    # verifier processes killed (hung past their deadline, or died) while scoring the batch this
    # sample's worker scored; set on the batch's first sample only (`RewardGroup.kills` adds them up)
    kills: int = field(default=0, compare=False)


@dataclass
class TrainSample:
    """One completion with everything the trainer needs (`rlvr.trainer.batch` collates them)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    rollout_logprobs: list[float]  # the engine's sampling log-probs (for diagnostics)
    loss_mask: list[int] | None = None  # multi-turn: 1 for sampled tokens, 0 for observations (None: all 1)
    # PPO with a critic (`rlvr.algos.values`): one advantage per completion token (None: `advantage`
    # on every token), and the critic's targets: the returns and its values when the batch was sampled
    token_advantages: list[float] | None = None
    returns: list[float] | None = None
    values: list[float] | None = None

    @property
    def num_loss_tokens(self) -> int:
        """The tokens that carry loss (and count in the token normaliser)."""
        return len(self.completion_ids) if self.loss_mask is None else int(sum(self.loss_mask))
