"""The judge a run starts for its `judge` verifiers (`reward.judge`): vLLM engine actors of their
own (a `RolloutGroup`, so a judge engine that dies is replaced like a rollout engine), served
on loopback through the rollout endpoint's own code (`rlvr.agent.endpoint`: the OpenAI-compatible
`/v1/chat/completions` and `/v1/completions`, batching concurrent requests onto the engines),
in a daemon thread of the driver.

Placement: `side` gives the engines their own Ray resources (`cpus_per_engine`,
`gpus_per_engine`: side GPUs); `colocate` puts judge engine i into bundle i of the trainer's
placement group (with trainer rank i and, colocated, rollout engine i), whose bundle grows by
the judge's CPUs and GPU fraction (`rlvr.cluster.placement.bundles`). Judge engines never
sleep: the judge scores while the rollout engines still generate.

The endpoint needs a per-run random token; `with_judge` gives each judge verifier item its
`url` and `token` as options (the verifier's child process sees nothing else of the driver's
environment), unless the item names a `url` of its own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass


@dataclass
class JudgeService:
    url: str  # the endpoint (its OpenAI base URL is url + "/v1")
    token: str
    engines: object  # the judge's RolloutGroup
    server: object = None

    @property
    def restarts(self) -> int:
        return self.engines.restarts

    def places(self) -> list[dict]:
        return self.engines.places()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.engines.stop()


def judge_rollout_config(judge):
    """The rollout-section view of `reward.judge` that its `RolloutGroup` is started with (greedy)."""
    from rlvr.config import RolloutConfig

    return RolloutConfig(engine="vllm", num_engines=judge.num_engines, n=1, max_tokens=judge.max_tokens,
                         temperature=0.0, engine_kwargs=dict(judge.engine_kwargs),
                         cpus_per_engine=judge.cpus_per_engine, gpus_per_engine=judge.gpus_per_engine,
                         num_threads=judge.num_threads)


def start_judge(judge, model_path: str, seed: int, *, pg=None, timeout_s: float = 1800.0) -> JudgeService:
    """Start `reward.judge`'s engines (`model_path`: its resolved model folder) and serve them;
    `pg`: the trainer's placement group, used when `judge.placement` is `colocate`."""
    from transformers import AutoTokenizer

    from rlvr.agent.board import EpisodeBoard
    from rlvr.agent.dispatch import EngineDispatcher
    from rlvr.agent.endpoint import Served, create_agent_app
    from rlvr.data.prompts import model_max_len
    from rlvr.rollout.group import RolloutGroup
    from rlvr.service.server import start_app_in_thread
    from rlvr.types import SamplingSpec

    rcfg = judge_rollout_config(judge)
    engines = RolloutGroup(rcfg, model_path, seed, judge.dtype,
                           colocate_pg=pg if judge.placement == "colocate" else None, timeout_s=timeout_s)
    service = JudgeService("", secrets.token_urlsafe(24), engines)
    try:
        served = Served(AutoTokenizer.from_pretrained(model_path), "hermes", SamplingSpec(max_tokens=judge.max_tokens),
                        model_max_len(model_path, rcfg.engine_kwargs), {}, "judge")
        app = create_agent_app(EpisodeBoard(timeout_s), EngineDispatcher(engines), served, service.token)
        service.server = start_app_in_thread(app, judge.host, judge.port, "rlvr-judge-endpoint")
        service.url = service.server.url
    except BaseException:
        service.stop()
        raise
    print(f"[rlvr] judge: {judge.num_engines} engine(s) of {model_path} at {service.url}/v1", flush=True)
    return service


def with_judge(verifiers: list[dict], service: JudgeService | None) -> list[dict]:
    """The verifier items, each judge item without a `url` of its own given the run's judge
    endpoint and token.

    >>> service = JudgeService("http://127.0.0.1:5000", "t0k", engines=None)
    >>> with_judge([{"name": "math"}, {"name": "rlvr.reward.builtin.judge:JudgeVerifier"}], service)[1]["url"]
    'http://127.0.0.1:5000'
    """
    from rlvr.config.reward import is_judge

    if service is None:
        return [dict(v) for v in verifiers]
    return [{**v, "url": service.url, "token": service.token} if is_judge(v.get("name", "")) and "url" not in v
            else dict(v) for v in verifiers]

