"""Waiting on remote calls without hanging: deadlines and fail-fast fan-outs.

`ray.get` on a fan-out (a call on every trainer rank, say) waits for all of them.
If one rank dies, the others sit in a collective with it until gloo/NCCL time
out, which can be the better part of an hour. `wait_all` returns the results in
order like `ray.get`, but ends the wait at the first call that fails, with an
error naming the call and the actor's own error, and turns a call still running
after `timeout_s` (`cluster.rpc_timeout_s`) into an error naming it too. Every
group (`rlvr.rollout.group`, `rlvr.reward.group`, `rlvr.trainer.group`,
`rlvr.sync.group`) waits through it.
"""

from __future__ import annotations

import os
import time


class RemoteCallError(RuntimeError):
    """A remote call failed, its actor died, or it did not answer in time."""


def wait_all(refs: list, what: str, timeout_s: float) -> list:
    """Results of `refs` in order; raises RemoteCallError at the first failure or at the deadline."""
    import ray

    deadline = time.monotonic() + timeout_s
    pending = list(refs)
    while pending:
        # waits of at most a second: Python runs signal handlers (SIGTERM, Ctrl-C) between them
        ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, min(1.0, deadline - time.monotonic())))
        if not ready and time.monotonic() < deadline:
            continue
        if not ready:
            raise RemoteCallError(f"{what}: {len(pending)} of {len(refs)} call(s) did not answer within "
                                  f"{timeout_s:g} s (cluster.rpc_timeout_s)")
        try:
            ray.get(ready[0])
        except Exception as e:
            raise RemoteCallError(f"{what} failed: {type(e).__name__}: {_first_lines(str(e))}") from e
    return ray.get(list(refs))


def actor_died(error: BaseException | None) -> bool:
    """Whether `error` (or the error a RemoteCallError wraps) says the actor's process is gone."""
    import ray

    while error is not None:
        if isinstance(error, ray.exceptions.RayActorError):
            return True
        error = error.__cause__
    return False


def dead(handles: list, timeout_s: float = 10.0) -> list[int]:
    """Indices of the actors in `handles` whose process is gone (a ping fails with
    RayActorError; an actor busy past `timeout_s`, say stuck in a collective, counts as alive)."""
    import ray

    refs = [h.__ray_call__.remote(lambda self: True) for h in handles]
    ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    out = []
    for i, ref in enumerate(refs):
        try:
            ray.get(ref, timeout=0)
        except ray.exceptions.RayActorError:
            out.append(i)
        except Exception:  # still busy (timeout) or anything else: alive as far as we know
            pass
    return out


def one_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def places(handles: list) -> list[dict]:
    """The Ray node id and process id of each actor (shown in status.json as `placement`)."""
    import ray

    def where(self) -> dict:
        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    return ray.get([h.__ray_call__.remote(where) for h in handles])


def _first_lines(text: str, n: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:n]) + ("\n..." if len(lines) > n else "")
