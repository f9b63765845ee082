"""Starting a run's agent side (`rollout.agent`): the episode board, the OpenAI-compatible
endpoint on the rollout engines (in a daemon thread of the driver, like the status
service), and the agent workers; and stopping them."""

from __future__ import annotations

from dataclasses import dataclass

from rlvr.types import SamplingSpec


@dataclass
class AgentService:
    url: str  # the endpoint (its OpenAI base URL is url + "/v1")
    board: object
    server: object
    agents: object = None  # the AgentGroup (None: outside agents)

    @property
    def restarts(self) -> int:
        return self.agents.restarts if self.agents is not None else 0

    def stop(self) -> None:
        if self.agents is not None:
            self.agents.stop()
        self.server.stop()


def start_agent_service(r, service, rollouts, tokenizer, *, model_name: str, max_len: int | None,
                        template_kwargs: dict, timeout_s: float):
    """`r`: the `rollout` section; `service`: the `service` section (its token guards the
    endpoint too). Returns the `AgentService` and the `AgentRunner` the loop's batches use."""
    from rlvr.agent.board import EpisodeBoard
    from rlvr.agent.dispatch import EngineDispatcher
    from rlvr.agent.endpoint import Served, create_agent_app
    from rlvr.agent.runner import AgentRunner
    from rlvr.agent.workers import AgentGroup
    from rlvr.service.server import resolve_token, start_app_in_thread

    token = resolve_token(service.token_env, service.token_file)
    board = EpisodeBoard(r.agent_timeout_s)
    run_sampling = SamplingSpec(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k)
    served = Served(tokenizer, r.multi_turn.parser, run_sampling, max_len, dict(template_kwargs), model_name)
    app = create_agent_app(board, EngineDispatcher(rollouts), served, token)
    server = start_app_in_thread(app, r.agent_host, r.agent_port, "rlvr-agent-endpoint")
    out = AgentService(server.url, board, server)
    try:
        if r.agent != "external":
            out.agents = AgentGroup(r, server.url, token or "rlvr", timeout_s)
    except BaseException:
        out.stop()
        raise
    print(f"[rlvr] agent endpoint: {server.url}/v1" + (" (outside agents: GET /v1/episodes/next)"
                                                        if r.agent == "external" else ""), flush=True)
    return out, AgentRunner(board, out.agents, r.agent_reward_weight)
