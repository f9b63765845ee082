"""One short real training run scored by model verifiers: a `reward_model` (the tiny locally built RM),
a `judge` served by a judge vLLM engine the run starts (the tiny arithmetic model asked each
sample's own question, so its verdict is its greedy answer), a garbage judge (a verdict format the
model never writes) and a hanging judge (a local server that accepts and never answers). The run
completes; the garbage and hanging judges fail only their own samples, counted by kind."""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from rlvr.config import load_recipe
from rlvr.run.metrics import read_metrics
from tests.helpers.runs import read_status, run_short

pytestmark = pytest.mark.timeout(600)

RM = "rlvr.reward.builtin.reward_model:RewardModelVerifier"  # `reward_model` once the package is installed
JUDGE = "rlvr.reward.builtin.judge:JudgeVerifier"  # `judge`
PROMPTS, N, STEPS = 6, 4, 2


def hanging_server():
    """A server on 127.0.0.1 that accepts connections and never answers; (url, stop)."""
    sock = socket.create_server(("127.0.0.1", 0))
    held, done = [], threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    def stop():
        done.set()
        thread.join()
        for c in held:
            c.close()
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


@pytest.fixture(scope="module")
def judged_run(ray_cluster, warm_model_dir, reward_model_dir, tmp_path_factory):
    url, stop = hanging_server()
    verifiers = (
        "reward.verifiers=[{name: math},"
        f" {{name: '{RM}', weight: 0.0, timeout_s: 60, path: '{reward_model_dir}', template: plain, batch_size: 8}},"
        f" {{name: '{JUDGE}', weight: 0.0, timeout_s: 60, chat: false, template: '{{prompt}}', 'range': [0, 198],"
        "   max_tokens: 6, request_timeout_s: 30},"
        f" {{name: '{JUDGE}', weight: 0.0, timeout_s: 60, chat: false, template: '{{prompt}}',"
        "   choices: {'YES': 1.0, 'NO': 0.0}, max_tokens: 6},"
        f" {{name: '{JUDGE}', weight: 0.0, timeout_s: 30, url: '{url}', request_timeout_s: 1}}]")
    try:
        yield run_short(tmp_path_factory.mktemp("judged"), "judged", [
            f"trainer.total_steps={STEPS}", f"data.prompts_per_step={PROMPTS}", f"rollout.n={N}", "eval.every=0",
            "eval.num_prompts=4", "logging.plots=false", "checkpoint.save_final=false", "reward.max_failure_fraction=1.0", verifiers,
            "reward.judge.model=builtin:tiny", "reward.judge.cpus_per_engine=0.5", "reward.judge.max_tokens=8",
            "reward.judge.placement=colocate"])  # in trainer bundle 0 (side placement: the eval test)
    finally:
        stop()


def test_model_verifiers_score_a_run_and_bad_judges_fail_only_their_samples(judged_run, warm_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.models.tiny import greedy_generate

    run_dir = judged_run["run_dir"]
    rows = [r for r in read_metrics(run_dir) if "reward/math/mean" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    rm, judge, garbage, hang = RM, f"{JUDGE}#2", f"{JUDGE}#3", f"{JUDGE}#4"
    samples = PROMPTS * N
    for r in rows:
        assert r["reward/math/failures"] == 0 and r[f"reward/{rm}/failures"] == 0
        assert r[f"reward/{rm}/tokens"] > 0 and f"reward/{rm}/mean" in r
        assert r[f"reward/{judge}/failures"] == 0 and 0 <= r[f"reward/{judge}/verdict"] <= 198
        assert r[f"reward/{garbage}/failures"] == r[f"reward/{garbage}/failures/unparsed"] == samples
        assert r[f"reward/{hang}/failures"] == r[f"reward/{hang}/failures/timeout"] == samples
        assert r["faults/judge_restarts"] == 0
    # the judge's verdict on each sample is its own greedy answer to the sample's question
    with open(os.path.join(run_dir, "samples", "step_000001.jsonl")) as f:
        records = [json.loads(line) for line in f]
    tok = AutoTokenizer.from_pretrained(warm_model_dir)
    model = AutoModelForCausalLM.from_pretrained(warm_model_dir)
    prompts = sorted({rec["prompt"] for rec in records})
    answers = dict(zip(prompts, greedy_generate(model, tok, [tok(p, add_special_tokens=False)["input_ids"]
                                                             for p in prompts], 8)))
    agree = [rec["parts"][judge]["verdict"] == float(answers[rec["prompt"]].strip()) for rec in records
             if answers[rec["prompt"]].strip().isdigit()]
    assert len(agree) >= samples // 2 and sum(agree) >= 0.9 * len(agree), agree
    assert all(rec["failures"][garbage].startswith("unparsed:") for rec in records)
    assert all(rec["failures"][hang].startswith("timeout:") for rec in records)
    # the RM: every sample scored, its raw logit reported
    assert all(rm not in rec["failures"] and "raw" in rec["parts"][rm] for rec in records)
    # the judge engine was placed and reported; its url and per-run token went to the verifiers only
    assert len(read_status(run_dir)["placement"]["judges"]) == 1
    saved = load_recipe(os.path.join(run_dir, "recipe.yaml")).reward.verifiers
    assert [("url" in v, "token" in v) for v in saved[2:]] == [(False, False), (False, False), (True, False)]
