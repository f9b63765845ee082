"""The tool workers of a run as one group of Ray actors (`rlvr.cluster.workers`): a turn's tool
calls are spread over them, and a worker that dies is replaced (its calls run again on
another worker). Each worker runs its calls in a child process under hard timeouts
(`rlvr.tools.worker`)."""

from __future__ import annotations

from rlvr.cluster.workers import WorkerGroup


class ToolGroup:
    """`cfg`: `rollout.multi_turn` (the tools, their timeout, the workers and their CPUs)."""

    def __init__(self, cfg, timeout_s: float = 1800.0):
        from rlvr.tools.worker import ToolWorker

        args = (list(cfg.tools), cfg.tool_timeout_s, cfg.max_observation_chars, cfg.tool_procs,
                list(cfg.tool_env_passthrough))
        self.kills = 0  # tool processes killed (hung past the deadline) or found dead, over the run
        self.workers = WorkerGroup(ToolWorker, args, cfg.tool_workers, cfg.tool_cpus_per_worker, label="tool worker",
                                   timeout_s=timeout_s)

    @property
    def restarts(self) -> int:
        """Tool workers (Ray actors) replaced; `kills` counts their tool processes killed."""
        return self.workers.restarts

    def submit(self, calls: list[tuple[str, dict]]) -> list:
        """Start `(tool name, arguments)` calls; what `collect` takes."""
        return self.workers.submit("call", list(calls))

    def collect(self, pending: list) -> list:
        """The `ToolResult`s of what `submit` started, in order."""
        results = self.workers.collect(pending, "call")
        self.kills += sum(r.killed for r in results)
        return results

    def places(self) -> list[dict]:
        return self.workers.places()

    def stop(self) -> None:
        self.workers.stop()
