"""The `judge` verifier against a real local HTTP server that answers like an OpenAI-compatible
endpoint (its answers chosen per request), one that errors and one that hangs; the verdict
parser; the recipe checks of `reward.judge`."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlvr.config import load_recipe
from rlvr.config.checks import RecipeError
from rlvr.reward.builtin.judge import JudgeVerifier, Verdict
from rlvr.reward.worker import failure_kind
from rlvr.types import RewardInput

SEEN: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    """Answers with the completion text after "say:" in the prompt; "hang" sleeps, "500" fails."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        SEEN.append({"path": self.path, "auth": self.headers.get("authorization"), **body})
        prompt = body["messages"][0]["content"] if "messages" in body else body["prompt"]
        said = prompt.split("say:", 1)[1].strip()
        if said == "hang":
            time.sleep(5)
        if said == "500":
            self.send_response(500)
            self.end_headers()
            return
        choice = {"message": {"role": "assistant", "content": said}} if "messages" in body else {"text": said}
        data = json.dumps({"choices": [choice]}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_batch_mixes_verdicts_and_failures_each_alone(server):
    judge = JudgeVerifier(url=server, token="s3cret", template="Q {prompt} say: {completion}", range=[0, 10],
                          request_timeout_s=1, concurrency=8)
    said = ["7", "Score: 3/10", "no idea", "12", "hang", "500", "10"]
    t0 = time.perf_counter()
    scores = judge([RewardInput("q", s, "a") for s in said])
    elapsed = time.perf_counter() - t0
    assert [s.value for s in scores] == [7.0, 3.0, 0.0, 0.0, 0.0, 0.0, 10.0]
    assert [failure_kind(s.failure) if s.failure else None for s in scores] == \
        [None, None, "unparsed", "unparsed", "timeout", "http", None]
    assert elapsed < 3.0  # concurrent: the hang costs its own timeout once, not the batch's
    assert all(r["auth"] == "Bearer s3cret" and r["path"] == "/v1/chat/completions" and r["temperature"] == 0.0
               for r in SEEN[-len(said):])


def test_choices_completions_endpoint_and_normalize(server):
    judge = JudgeVerifier(url=server, chat=False, template="say: {completion}", choices={"PASS": 1.0, "FAIL": 0.0})
    assert [s.value for s in judge([RewardInput("", "PASS", ""), RewardInput("", "it is FAIL", "")])] == [1.0, 0.0]
    assert SEEN[-1]["path"] == "/v1/completions" and "prompt" in SEEN[-1]
    norm = JudgeVerifier(url=server, template="say: {completion}", range=[1, 5], normalize=True)
    assert norm([RewardInput("", "4", "")])[0].value == pytest.approx(0.75)  # (4 - 1) / (5 - 1)


def test_verdict_parser_regex_group():
    v = Verdict(None, r"\[\[(\d+)\]\]", (1, 10), False)
    assert v("first 3 then [[8]]").value == 8.0
    assert failure_kind(v("[[0]]").failure) == "unparsed"


def test_no_url_is_an_explicit_failure_and_bad_options_fail():
    assert failure_kind(JudgeVerifier()([RewardInput("", "", "")])[0].failure) == "http"
    with pytest.raises(ValueError, match="option range"):
        JudgeVerifier(range=[5, 1])
    with pytest.raises(TypeError, match="option choices"):
        JudgeVerifier(choices={"YES": "1"})


def test_recipe_needs_a_judge_for_a_judge_verifier_without_url():
    with pytest.raises(RecipeError, match=r"reward\.verifiers\[1\]\.url"):
        load_recipe(None, ["reward.verifiers=[{name: math}, {name: 'rlvr.reward.builtin.judge:JudgeVerifier'}]"])
    cfg = load_recipe(None, ["reward.verifiers=[{name: 'rlvr.reward.builtin.judge:JudgeVerifier'}]",
                             "reward.judge.model=builtin:tiny", "reward.judge.placement=colocate"])
    from rlvr.cluster.placement import bundles
    from rlvr.config.cluster import logical_cpus_needed

    assert bundles(cfg.trainer, cfg.rollout, False, cfg.reward.judge)[0]["CPU"] == cfg.trainer.cpus_per_worker + 1.0
    assert logical_cpus_needed(cfg.trainer, cfg.rollout, cfg.reward) == 5  # 2 x 1 + 1 + 0.5 + 1 (the judge), rounded up
    with pytest.raises(RecipeError, match=r"reward\.judge\.placement"):
        load_recipe(None, ["reward.judge.placement=beside"])


def test_eval_verifiers_take_options_and_need_a_judge(tmp_path):
    from argparse import Namespace

    from rlvr.eval.offline import eval_verifiers

    judge = "rlvr.reward.builtin.judge:JudgeVerifier"
    args = Namespace(reward="math,format", verifiers=None, judge_model=None)
    assert eval_verifiers(args) == [{"name": "math"}, {"name": "format"}]
    args.verifiers = f"[{{name: math}}, {{name: '{judge}', choices: {{'YES': 1, 'NO': 0}}}}]"
    with pytest.raises(RecipeError, match=r"--verifiers\[1\]\.url.*--judge-model"):
        eval_verifiers(args)
    args.judge_model = "some/judge"
    assert eval_verifiers(args)[1] == {"name": judge, "choices": {"YES": 1, "NO": 0}}
    path = tmp_path / "v.yaml"
    path.write_text("- {name: format, weight: 0.5}\n")
    assert eval_verifiers(Namespace(reward="math", verifiers=str(path), judge_model=None)) == \
        [{"name": "format", "weight": 0.5}]
    with pytest.raises(RecipeError, match=r"--verifiers\[0\]\.weight"):
        eval_verifiers(Namespace(reward="math", verifiers="[{name: math, weight: x}]", judge_model=None))


def test_an_eval_sets_judge_needs_the_runs_judge():
    sets = ("eval.sets=[{name: judged, path: builtin:arithmetic,"
            " verifiers: [{name: 'rlvr.reward.builtin.judge:JudgeVerifier'}]}]")
    with pytest.raises(RecipeError, match=r"eval\.sets\[0\]\.verifiers\[0\]\.url"):
        load_recipe(None, [sets])
    assert load_recipe(None, [sets, "reward.judge.model=builtin:tiny"]).reward.judge.model == "builtin:tiny"
