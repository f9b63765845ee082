"""Multi-turn episodes (`rlvr.rollout.episodes`) with the tiny tool model's tokenizer and chat
template, real tool workers (a child process each) and a scripted engine in place of vLLM (the
real engine's episodes are tested in tests/integration/test_multi_turn.py): token-exact
sequences, loss masks, endings, failures, seeds and metrics."""

from __future__ import annotations

import contextlib
import time

import pytest

from rlvr.config import DataConfig, ToolArithmeticConfig
from rlvr.config.rollout import MultiTurnConfig
from rlvr.data.prompts import render_prompts, template_kwargs
from rlvr.models.tiny import EOS_TOKEN
from rlvr.models.tiny_tools import ToolTask, call_text
from rlvr.rollout.episodes import TURN_SEED_STRIDE, EpisodeRunner, episode_metrics
from rlvr.tools.worker import LocalTools
from rlvr.types import Completion, SamplingSpec
from tests.helpers.bad_tools import BrokenEnv

TOOLS = [{"name": "calc"}, {"name": "tests.helpers.bad_tools:Chaos", "timeout_s": 1.0}]
SCRIPTS = {  # what the "model" writes in each turn, by the user's message
    "good": [call_text("2*3"), "6"],
    "two calls": [call_text("2*3") + call_text("1+1"), "8"],
    "bad json": ["<tool_call>{oops}</tool_call>", "6"],
    "no call": ["6"],
    "forever": [call_text("1+1")] * 10,
    "hang": ['<tool_call>\n{"name": "chaos", "arguments": {"mode": "hang"}}\n</tool_call>', "?"],
    "boom": ["boom " + call_text("1+1"), "2"],
}


class ScriptedEngine:
    """The rollout group's `stream`, writing each turn from SCRIPTS (by the first user message);
    "long" never stops (finish_reason "length"). Records every call's sampling spec."""

    def __init__(self, tokenizer):
        self.tok, self.eos = tokenizer, tokenizer.convert_tokens_to_ids(EOS_TOKEN)
        self.specs: list[SamplingSpec] = []

    def stream(self, requests, spec, chunks_per_engine: int = 1):
        self.specs.append(spec)
        half = (len(requests) + 1) // 2  # two chunks, as two engines would give
        for j, chunk in enumerate([requests[:half], requests[half:]]):
            yield j, chunk, [self._complete(i, r, spec) for i, r in enumerate(chunk) for _ in range(spec.n)]

    def _complete(self, i, request, spec) -> Completion:
        text = self.tok.decode(request.token_ids)
        user = text.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]  # the first user message
        if user == "long":
            ids, reason = self.tok("9" * spec.max_tokens, add_special_tokens=False)["input_ids"][:spec.max_tokens], "length"
        else:
            turn = text.count("<|im_start|>assistant") - 1
            ids = self.tok(SCRIPTS[user][turn], add_special_tokens=False)["input_ids"] + [self.eos]
            ids, reason = ids[:spec.max_tokens], "stop" if len(ids) <= spec.max_tokens else "length"
        return Completion(i, ids, [-0.25] * len(ids), self.tok.decode(ids, skip_special_tokens=True), reason, 3)


@pytest.fixture(scope="module")
def tokenizer():
    return ToolTask(ToolArithmeticConfig()).tokenizer()


@pytest.fixture(scope="module")
def tools():
    t = LocalTools(MultiTurnConfig(tools=TOOLS))
    yield t
    t.stop()


def timer(name):
    return contextlib.nullcontext()


def play(tokenizer, tools, users, n=1, make_env=BrokenEnv, **mt):
    cfg = MultiTurnConfig(enabled=True, tools=TOOLS, **{"max_turns": 3, **mt})
    kwargs = template_kwargs(DataConfig(), tools.schemas)
    prompts = render_prompts([{"prompt": u, "answer": "6"} for u in users], tokenizer, DataConfig(), tools.schemas)
    runner = EpisodeRunner(cfg, make_env, tools, tokenizer, kwargs, max_len=1024)
    engine = ScriptedEngine(tokenizer)
    completions = runner.run(engine, prompts, SamplingSpec(n=n, max_tokens=80, temperature=1.0, seed=100), 1, timer)
    return prompts, completions, engine, kwargs


def test_an_episode_is_the_sampled_turns_and_the_templates_observations(tokenizer, tools):
    prompts, [c], _, kwargs = play(tokenizer, tools, ["good"])
    e = c.episode
    assert [m["role"] for m in e["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert e["messages"][2]["content"] == "6" and c.text == "6"
    assert (e["turns"], e["tool_calls"], e["valid_tool_calls"], e["truncated"]) == (2, 1, 1, False)
    # token-exact: the prompt, then the turns and observations, is what the template renders
    full = tokenizer.apply_chat_template(e["messages"], tokenize=False, **kwargs)
    assert tokenizer.decode(prompts[0].token_ids + c.token_ids) + "\n" == full
    # the sampled tokens carry loss (their sampling logprobs kept); the observation is context
    call = tokenizer(call_text("2*3"), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    answer = tokenizer("6", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    obs = len(c.token_ids) - len(call) - len(answer)
    assert c.token_ids[:len(call)] == call and c.token_ids[-len(answer):] == answer
    assert c.mask == [1] * len(call) + [0] * obs + [1] * len(answer)
    assert c.logprobs == [-0.25] * len(call) + [0.0] * obs + [-0.25] * len(answer)
    assert e["observation_tokens"] == obs and c.weight_version == 3


def test_every_call_of_a_turn_runs_in_order(tokenizer, tools):
    _, [c], _, _ = play(tokenizer, tools, ["two calls"])
    assert [m["content"] for m in c.episode["messages"] if m["role"] == "tool"] == ["6", "2"]
    assert c.episode["tool_calls"] == 2 and c.episode["valid_tool_calls"] == 2


def test_endings_failures_and_metrics(tokenizer, tools):
    users = ["good", "bad json", "no call", "forever", "long", "boom"]
    _, cs, _, _ = play(tokenizer, tools, users, n=2)
    assert [c.prompt_index for c in cs] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    e = {u: cs[2 * i].episode for i, u in enumerate(users)}
    assert e["bad json"]["tool_failures"] == {"invalid": 1} and e["bad json"]["turns"] == 2
    assert e["bad json"]["messages"][2]["content"].startswith("error: invalid: the tool call is not valid JSON")
    assert (e["no call"]["turns"], e["no call"]["tool_calls"], e["no call"]["truncated"]) == (1, 0, False)
    assert (e["forever"]["turns"], e["forever"]["truncated"]) == (3, True)  # max_turns
    assert (e["long"]["turns"], e["long"]["truncated"]) == (1, True)  # cut by rollout.max_tokens
    assert e["boom"]["tool_failures"] == {"exception": 1} and e["boom"]["turns"] == 1  # the env raised
    m = episode_metrics(cs)
    assert m["multi_turn/turns"] == pytest.approx((2 + 2 + 1 + 3 + 1 + 1) / 6)
    assert m["multi_turn/valid_tool_call"] == pytest.approx(2 / 6)  # good, forever
    assert m["multi_turn/truncated"] == pytest.approx(2 / 6)
    assert m["multi_turn/tool_failures/invalid"] == 2 and m["multi_turn/tool_failures/exception"] == 2


def test_a_hanging_tool_is_an_error_observation_within_its_timeout(tokenizer, tools):
    t0 = time.perf_counter()
    _, [c, good], _, _ = play(tokenizer, tools, ["hang", "good"])
    assert time.perf_counter() - t0 < 1.0 + 2.0 + 2.0  # timeout + grace + the rest
    assert c.episode["tool_failures"] == {"timeout": 1} and c.episode["turns"] == 2
    assert c.episode["messages"][2]["content"].startswith("error: timeout")
    assert good.text == "6"


def test_on_tool_error_end_ends_the_episode(tokenizer, tools):
    _, [c], _, _ = play(tokenizer, tools, ["bad json"], on_tool_error="end")
    assert c.episode["turns"] == 1 and c.episode["tool_failures"] == {"invalid": 1}


def test_max_total_tokens_truncates(tokenizer, tools):
    prompts, [two], _, _ = play(tokenizer, tools, ["forever"], max_turns=2)
    # room for two turns, their observations and a cut third turn
    limit = len(prompts[0].token_ids) + len(two.token_ids) + two.episode["observation_tokens"] + 10
    _, [c], _, _ = play(tokenizer, tools, ["forever"], max_turns=10, max_total_tokens=limit)
    assert c.episode["truncated"] and c.episode["turns"] == 3
    assert len(prompts[0].token_ids) + len(c.token_ids) <= limit


def test_turn_seeds_are_the_steps_plus_a_stride_per_turn(tokenizer, tools):
    _, _, engine, _ = play(tokenizer, tools, ["good", "no call"], n=2)
    assert [(s.n, s.seed) for s in engine.specs] == [(2, 100), (1, 100 + TURN_SEED_STRIDE)]


def test_every_episode_has_its_own_environment_and_reward(tokenizer, tools):
    _, cs, _, _ = play(tokenizer, tools, ["good", "no call", "boom"], n=2)
    assert [c.episode["env_reward"] for c in cs] == [2.0, 2.0, 1.0, 1.0, 1.0, 1.0]  # BrokenEnv: the turn count
    envs = []

    class Counting(BrokenEnv):
        def __init__(self):
            envs.append(self)
            self.steps = 0

        def step(self, turn):
            self.steps += 1
            return super().step(turn)

    play(tokenizer, tools, ["good", "no call"], n=2, make_env=Counting)
    assert sorted(e.steps for e in envs) == [1, 1, 2, 2]  # one object per episode, state kept across turns


@pytest.mark.parametrize("value, error", [(float("nan"), "invalid: the environment's reward is nan"),
                                          ("x", "exception: ValueError"), (None, None)])
def test_a_bad_environment_reward_is_a_failure_of_its_sample(tokenizer, tools, value, error):
    class Bad(BrokenEnv):
        def reward(self, episode):
            return value

    _, [c], _, _ = play(tokenizer, tools, ["no call"], make_env=Bad)
    assert c.episode["env_reward"] is None
    assert (c.episode["env_error"] or None) == error or c.episode["env_error"].startswith(error)


def test_a_batch_of_episodes_survives_its_checkpoint_file(tokenizer, tools):
    """Async checkpoints keep the batch in flight as JSON (`rollout_batch.json`): episodes too."""
    from rlvr.loop.batches import Batch
    from rlvr.types import SampleReward

    prompts, cs, _, _ = play(tokenizer, tools, ["good", "bad json"])
    batch = Batch(prompts, cs, [SampleReward(1.0, {"math": 1.0}, {}) for _ in cs], {"x": 1.0}, {})
    back = Batch.from_json(batch.to_json())
    assert back.completions == cs and back.prompts == prompts
    assert back.completions[0].num_sampled == sum(cs[0].mask) < len(cs[0].token_ids)
