"""The `reward_model` verifier on the tiny locally built RM (`rlvr.models.tiny_rm`): its verdicts on
held-out prompts, its transforms, truncation as a failure kind or a flag, and the reward worker's
child process loading it once (`setup`) and counting its failures."""

from __future__ import annotations

import math
import random

import pytest

from rlvr.models.tiny_rm import malformed
from rlvr.reward.builtin.reward_model import RewardModelVerifier, transform_score
from rlvr.reward.worker import RewardWorker, failure_kind, reward_metrics
from rlvr.types import RewardInput

RM = "rlvr.reward.builtin.reward_model:RewardModelVerifier"  # the registered name `reward_model` once installed


def held_out(reward_model_dir, num=40):
    """(good, bad) RewardInputs on held-out (eval split) prompts, the prompt rendered as the policy sees it."""
    from transformers import AutoTokenizer

    from rlvr.config import ArithmeticConfig, DataConfig
    from rlvr.data.prompts import render_prompts
    from rlvr.data.rows import arithmetic_rows

    tok = AutoTokenizer.from_pretrained(reward_model_dir)
    rng = random.Random(7)
    prompts = render_prompts(arithmetic_rows(ArithmeticConfig(), "eval"), tok, DataConfig())[:num]
    return ([RewardInput(p.text, p.answer, p.answer) for p in prompts],
            [RewardInput(p.text, malformed(p.answer, rng), p.answer) for p in prompts])


def test_tiny_rm_ranks_well_formed_answers_first_on_held_out_prompts(reward_model_dir):
    good, bad = held_out(reward_model_dir)
    rm = RewardModelVerifier(path=reward_model_dir, template="plain", batch_size=16)
    rm.setup()
    g, b = rm(good), rm(bad)
    assert all(s.failure is None for s in g + b)
    wins = sum(x.value > y.value for x, y in zip(g, b))
    assert wins >= 0.95 * len(good), f"{wins}/{len(good)}"
    # transforms of the same logits: sigmoid in (0, 1) and monotone; a threshold between the means splits them
    raw = [s.parts["raw"] for s in g]
    assert [s.value for s in g] == raw
    sig = RewardModelVerifier(path=reward_model_dir, template="plain", transform="sigmoid")
    sig.setup()
    assert [s.value for s in sig(good[:4])] == pytest.approx([1 / (1 + math.exp(-x)) for x in raw[:4]], rel=1e-5)
    cut = (sum(raw) / len(raw) + sum(s.value for s in b) / len(b)) / 2
    thr = RewardModelVerifier(path=reward_model_dir, template="plain", transform="threshold", threshold=cut)
    thr.setup()
    assert sum(s.value for s in thr(good)) >= 0.9 * len(good) and sum(s.value for s in thr(bad)) <= 0.1 * len(bad)


def test_truncation_fails_or_is_flagged_and_chat_rendering(reward_model_dir):
    good, _ = held_out(reward_model_dir, 2)
    long = RewardInput(good[0].prompt, good[0].completion + " 1" * 200, good[0].answer)
    rm = RewardModelVerifier(path=reward_model_dir, template="plain", max_length=64)
    rm.setup()
    short, cut = rm([good[0], long])
    assert short.failure is None and short.parts["truncated"] == 0.0 and short.parts["tokens"] < 64
    assert failure_kind(cut.failure) == "truncated" and "> max_length 64" in cut.failure
    flag = RewardModelVerifier(path=reward_model_dir, template="plain", max_length=64, on_truncation="flag")
    flag.setup()
    flagged = flag([long])[0]
    assert flagged.failure is None and flagged.parts == {"raw": flagged.value, "tokens": 64.0, "truncated": 1.0}
    chat = RewardModelVerifier(path=reward_model_dir)  # auto: the tiny tokenizer has a chat template
    chat.setup()
    assert chat.render(RewardInput("hi", "4", "4"), chat=True) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"


@pytest.mark.parametrize("options, message", [
    ({"path": ""}, "option path"), ({"path": "x", "transform": "exp"}, "option transform"),
    ({"path": "x", "batch_size": 0}, "option batch_size"), ({"path": "x", "device": "tpu"}, "option device"),
    ({"path": "x", "on_truncation": "drop"}, "option on_truncation"),
])
def test_bad_options_name_the_option(options, message):
    with pytest.raises((TypeError, ValueError), match=message):
        RewardModelVerifier(**options)


def test_transform_hand_checked():
    assert transform_score(-1.0, "sigmoid") == pytest.approx(0.26894142)  # 1 / (1 + e^1)
    assert transform_score(-800.0, "sigmoid") == 0.0  # no overflow
    assert (transform_score(0.5, "threshold", 0.5), transform_score(0.49, "threshold", 0.5)) == (1.0, 0.0)


def test_reward_worker_loads_the_rm_once_and_counts_its_failures(reward_model_dir):
    good, bad = held_out(reward_model_dir, 6)
    long = RewardInput(good[0].prompt, "9" * 300, good[0].answer)
    worker = RewardWorker([{"name": RM, "path": reward_model_dir, "template": "plain", "max_length": 96,
                            "batch_size": 4, "timeout_s": 30}], procs=1)
    try:
        assert worker.batch_sizes == [4]
        results = worker.score(good + bad + [long])
    finally:
        worker.shutdown()
    key = RM
    assert all(r.failures == {} for r in results[:12])
    assert sum(g.scores[key] > b.scores[key] for g, b in zip(results[:6], results[6:12])) >= 5
    m = reward_metrics(results)
    assert m[f"reward/{key}/failures"] == 1.0 and m[f"reward/{key}/failures/truncated"] == 1.0
    assert m[f"reward/{key}/tokens"] > 0


def test_a_reward_model_that_cannot_load_fails_the_worker_start(tmp_path):
    with pytest.raises(RuntimeError, match="could not load the verifiers.*none"):
        RewardWorker([{"name": RM, "path": str(tmp_path / "none")}], procs=1)


def test_the_rm_keeps_the_verifier_contract(reward_model_dir):
    """The plugin conformance kit (`rlvr rewards check`) on the RM: hostile texts (1 MB, lone surrogates,
    NUL) are scored (cut from the left with `on_truncation: flag`), batches follow their samples."""
    from rlvr.reward.conformance import check_verifier

    results = check_verifier(RM, {"path": reward_model_dir, "template": "plain", "on_truncation": "flag",
                                  "max_length": 256}, timeout_s=60, n_timing=3, max_ms=5000)
    assert {r.name: r.status for r in results if r.status != "SKIP"} == {
        name: "PASS" for name in ("loads", "returns_score", "empty", "huge", "unicode", "surrogates_nul",
                                  "deterministic", "latency", "batch_count", "batch_order", "finite",
                                  "no_crash_or_hang")}, [(r.name, r.detail) for r in results]
