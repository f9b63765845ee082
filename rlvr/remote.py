"""Waiting on remote calls without hanging: deadlines and fail-fast fan-outs.

`ray.get` on a fan-out (a call on every trainer rank, say) waits for all of them.
If one rank dies, the others sit in a collective with it until gloo/NCCL time
out, which can be the better part of an hour. `wait_all` returns the results in
order like `ray.get`, but ends the wait at the first call that fails, with an
error naming the call and the actor's own error, and turns a call still running
after `timeout_s` (`cluster.rpc_timeout_s`) into an error naming it too.
"""

from __future__ import annotations

import time


class RemoteCallError(RuntimeError):
    """A remote call failed, its actor died, or it did not answer in time."""


def wait_all(refs: list, what: str, timeout_s: float) -> list:
    """Results of `refs` in order; raises RemoteCallError at the first failure or at the deadline."""
    import ray

    deadline = time.monotonic() + timeout_s
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            raise RemoteCallError(f"{what}: {len(pending)} of {len(refs)} call(s) did not answer within "
                                  f"{timeout_s:g} s (cluster.rpc_timeout_s)")
        try:
            ray.get(ready[0])
        except Exception as e:
            raise RemoteCallError(f"{what} failed: {type(e).__name__}: {_first_lines(str(e))}") from e
    return ray.get(list(refs))


def _first_lines(text: str, n: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:n]) + ("\n..." if len(lines) > n else "")
