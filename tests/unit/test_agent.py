"""Agent episodes without Ray: the board (ids, seeds, deadlines, rewards), how captured calls
become training sequences (merged when they extend each other), what an agent's return value
posts, the batch's agent metrics, and the recipe checks."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from rlvr.agent.board import CALL_SEED_STRIDE, Call, EpisodeBoard, segments
from rlvr.agent.runner import agent_metrics, episode_completion
from rlvr.agent.workers import result_body
from rlvr.types import AgentResult, Completion, Prompt


def prompts(k: int = 2) -> list[Prompt]:
    return [Prompt(f"q{i}", [1, 2, i], str(i), {"id": i}, [{"role": "user", "content": f"q{i}"}]) for i in range(k)]


def call(prompt, tokens, version=1, text="", messages=None) -> Call:
    return Call(list(prompt), list(tokens), [-0.5] * len(tokens), version, "stop", text, messages)


# ---------------------------------------------------------------- segments


def test_consecutive_calls_that_extend_each_other_are_one_sequence():
    a = call([10, 11], [12, 13])
    b = call([10, 11, 12, 13, 20, 21], [14])  # a's prompt + a's tokens + two observation tokens
    c = call([10, 11, 12, 13, 20, 21, 14, 30], [15, 16], version=2)
    [s] = segments([a, b, c])
    assert s["prompt_ids"] == [10, 11]
    assert s["token_ids"] == [12, 13, 20, 21, 14, 30, 15, 16]
    assert s["mask"] == [1, 1, 0, 0, 1, 0, 1, 1]  # only sampled tokens carry loss
    assert s["logprobs"] == [-0.5, -0.5, 0.0, 0.0, -0.5, 0.0, -0.5, -0.5]
    assert s["weight_version"] == 1  # the oldest weights that sampled any of it


def test_a_rewritten_history_starts_a_new_sequence():
    a = call([10, 11], [12, 13])
    compacted = call([10, 99], [14])  # the agent summarised: not a's prompt + tokens
    sub_agent = call([50], [51])
    back = call([50, 51, 52], [53])  # extends the sub-agent's call, the one just before
    out = segments([a, compacted, sub_agent, back])
    assert [(s["prompt_ids"], s["token_ids"], s["mask"]) for s in out] == [
        ([10, 11], [12, 13], [1, 1]), ([10, 99], [14], [1]), ([50], [51, 52, 53], [1, 0, 1])]
    # a call that repeats a's prompt (a second sample of it) does not extend a
    assert len(segments([a, call([10, 11], [17])])) == 2


def test_the_segments_are_new_lists():
    a = call([1], [2])
    s = segments([a, call([1, 2, 3], [4])])
    assert a.token_ids == [2] and s[0]["token_ids"] == [2, 3, 4]


# ---------------------------------------------------------------- board


def test_board_ids_seeds_and_rewards():
    board = EpisodeBoard(timeout_s=60)
    eps = board.open(prompts(2), n=3, seed=1000, greedy=False, hand_out=False)
    assert [e.prompt_index for e in eps] == [0, 0, 0, 1, 1, 1]
    assert len({e.id for e in eps}) == 6 and [e.seed for e in eps] == [1000 + j for j in range(6)]
    assert eps[4].row() == {"messages": [{"role": "user", "content": "q1"}], "prompt": "q1", "answer": "1",
                            "metadata": {"id": 1}}
    e, seed = board.start_call(eps[1].id)
    assert (e, seed) == (eps[1], 1001)
    assert board.start_call(eps[1].id)[1] == 1001 + CALL_SEED_STRIDE  # the episode's second call
    assert board.record(eps[1].id, [call([1], [2])])
    assert board.close(eps[1].id, 1.0, "42") == "closed"
    assert board.close(eps[1].id, 0.0) == "already closed"
    assert board.close("ep-nope", 1.0) == "unknown"
    with pytest.raises(KeyError):
        board.start_call(eps[1].id)  # closed: no more calls
    assert not board.record(eps[1].id, [call([1], [3])])
    assert eps[1].calls == [call([1], [2])] and (eps[1].reward, eps[1].final) == (1.0, "42")


def test_board_hands_out_episodes_once_and_drops_late_ones():
    board = EpisodeBoard(timeout_s=0.3)
    eps = board.open(prompts(1), n=2, seed=None, greedy=True, hand_out=True)
    first, second = board.take(), board.take()
    assert {first.id, second.id} == {e.id for e in eps} and board.take() is None
    assert first.greedy and first.seed is None and board.start_call(first.id)[1] is None
    board.close(first.id, 0.5)
    t0 = time.monotonic()
    board.wait(eps)  # the second never gets a reward: the wait ends at its deadline
    assert 0.2 < time.monotonic() - t0 < 2.0
    assert board.close(second.id, 1.0) == "expired"
    board.finish(eps)
    assert second.error.startswith("timeout:") and first.error is None
    assert board.close(first.id, 1.0) == "unknown"  # off the board


def test_board_wait_returns_when_the_last_reward_arrives():
    board = EpisodeBoard(timeout_s=30)
    eps = board.open(prompts(1), n=2, seed=0, greedy=False, hand_out=False)
    closer = threading.Timer(0.2, lambda: [board.close(e.id, 1.0) for e in eps])
    closer.start()
    t0 = time.monotonic()
    board.wait(eps)
    assert time.monotonic() - t0 < 5.0


# ---------------------------------------------------------------- results and samples


def test_result_body_accepts_numbers_results_and_dicts_and_refuses_the_rest():
    assert result_body(True) == {"reward": 1.0}
    assert result_body({"reward": 2, "final": "x"}) == {"reward": 2.0, "final": "x"}
    assert result_body(AgentResult(final="7")) == {"final": "7"}
    assert result_body(float("nan"))["error"].startswith("invalid:")
    assert result_body({"reward": "1"})["error"].startswith("invalid:")
    assert result_body({"final": 3})["error"].startswith("invalid:")
    assert result_body([1])["error"].startswith("invalid:")


def test_an_episode_is_one_completion_whose_segments_share_its_advantage():
    from rlvr.config import AlgorithmConfig
    from rlvr.loop.samples import build_samples

    board = EpisodeBoard(60)
    eps = board.open(prompts(1), n=2, seed=0, greedy=False, hand_out=False)
    board.record(eps[0].id, [call([1, 2, 0], [5, 6], messages=[{"role": "user", "content": "q0"}]),
                             call([1, 7], [8], text="42", messages=[{"role": "user", "content": "short"}])])
    board.record(eps[1].id, [call([1, 2, 0], [9], text="41")])
    board.close(eps[0].id, None)
    board.close(eps[1].id, None)
    done = [episode_completion(e) for e in eps]
    assert done[0].text == "42" and done[0].num_sampled == 3 and len(done[0].segments) == 2
    assert done[0].episode["messages"][-1] == {"role": "assistant", "content": "42"}
    assert done[0].episode["agent"]["calls"] == 2
    samples, _, adv = build_samples(prompts(1), done, torch.tensor([1.0, 0.0]), AlgorithmConfig())
    assert [(s.prompt_ids, s.completion_ids) for s in samples] == [([1, 2, 0], [5, 6]), ([1, 7], [8]), ([1, 2, 0], [9])]
    assert samples[0].advantage == samples[1].advantage == pytest.approx(adv[0]) and adv[0] > 0 > adv[1]


def test_completion_pieces_and_batch_json_keep_segments():
    from rlvr.loop.batches import Batch
    from rlvr.types import SampleReward

    plain = Completion(0, [4, 5], [-1.0, -1.0], "x", "stop")
    assert plain.pieces([1, 2]) == [([1, 2], [4, 5], [-1.0, -1.0], None)]
    seg = {"prompt_ids": [7], "token_ids": [8, 9], "logprobs": [-1.0, 0.0], "mask": [1, 0], "weight_version": 3}
    agent = Completion(0, [], [], "y", "stop", 3, segments=[seg])
    assert agent.pieces([1, 2]) == [([7], [8, 9], [-1.0, 0.0], [1, 0])] and agent.num_sampled == 1
    batch = Batch(prompts(1), [plain, agent], [SampleReward(1.0, {}, {}), SampleReward(0.0, {}, {})])
    assert Batch.from_json(batch.to_json()).completions[1].segments == [seg]


def test_agent_metrics_count_kept_and_dropped_episodes_by_kind():
    board = EpisodeBoard(60)
    eps = board.open(prompts(1), n=4, seed=0, greedy=False, hand_out=False)
    eps[0].calls, eps[1].calls = [call([1], [2]), call([1, 2, 3], [4])], [call([1], [2]), call([5], [6])]
    eps[0].latency_s, eps[1].latency_s = 1.0, 3.0
    eps[2].error, eps[3].error = "timeout: no reward", "exception: ValueError: boom"
    m = agent_metrics(eps)
    assert (m["agent/episodes"], m["agent/dropped"], m["agent/calls_per_episode"]) == (2.0, 2.0, 2.0)
    assert m["agent/segments_per_episode"] == 1.5 and m["agent/latency"] == 2.0
    assert (m["agent/failures/timeout"], m["agent/failures/exception"], m["agent/failures/no_calls"]) == (1.0, 1.0, 0.0)


# ---------------------------------------------------------------- recipe checks


@pytest.mark.parametrize("overrides, key", [
    (["rollout.agent=no_such_agent"], "rollout.agent"),
    (["rollout.agent=calc", "rollout.multi_turn.enabled=true", "rollout.multi_turn.tools=[calc]"], "rollout.agent"),
    (["rollout.agent=calc", "rollout.agent_timeout_s=0"], "rollout.agent_timeout_s"),
    (["rollout.agent=calc", "rollout.agent_concurrency=0"], "rollout.agent_concurrency"),
    (["rollout.agent=calc", "algorithm.kl.coef=0.1", "algorithm.kl.where=reward"], "algorithm.kl.where"),
    (["rollout.agent=external", "rollout.agent_host=0.0.0.0", "service.token_env=RLVR_TEST_NO_SUCH_TOKEN"],
     "rollout.agent_host"),
])
def test_bad_agent_recipes_fail_naming_the_key(overrides, key):
    from rlvr.config import RecipeError, load_recipe
    from tests.helpers.runs import RECIPE

    with pytest.raises(RecipeError) as e:
        load_recipe(RECIPE, overrides)
    assert e.value.key == key


def test_agent_recipes_that_are_fine_load():
    from rlvr.config import load_recipe
    from tests.helpers.runs import RECIPE

    assert load_recipe(RECIPE, ["rollout.agent=calc"]).rollout.agent == "calc"
    assert load_recipe(RECIPE, ["rollout.agent=external"]).rollout.agent == "external"
    assert load_recipe(RECIPE, ["rollout.agent=tests.helpers.agents:raises"]).rollout.agent_timeout_s == 300.0
