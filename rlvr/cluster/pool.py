"""A pool of `IsolatedChild` processes that runs a batch of independent jobs side by side, each
under its own hard deadline (`timeout_s + GRACE_S` from the moment its child starts it): the
reward worker's verifier processes (`rlvr.reward.worker`).

Why a pool: a hung call holds its child until the deadline kills it; with one child every
call queued behind it waits, and a verifier that hangs on every sample cost the step
N x (timeout + restart). Here a hung call holds one child while the others go on, and:

* a killed (or dead) child is counted in `kills` and replaced at once, without waiting for
  its new process to load (`wait=False`: it takes jobs once it has answered);
* when every child is busy with a call that has run past `stall_after(timeout_s)` (a quarter
  of its timeout, at most 1 s) and jobs are still queued, extra children are started, one
  per queued job, up to `max_procs`, so calls that all hang time out together rather than
  one after another. The extras are stopped at the end of the batch; `procs` stay warm.

So a batch whose every call hangs costs about stall + start of the extras + timeout + grace
(~3 s with a 1 s timeout and a light verifier, when `max_procs` covers the batch), and a
batch with a few hung calls costs the slowest of them, not their sum. The price: the
extras' start (importing the plugins: ~0.1 s light, ~0.6 s with sympy, CPU time each) is
paid only when every child is stuck.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait

from rlvr.cluster.isolated import GRACE_S, STARTUP_TIMEOUT_S, IsolatedChild

STALL_S = 1.0  # a call running this long (or a quarter of its timeout) counts as stuck


def stall_after(timeout_s: float) -> float:
    """How long a call runs before its child counts as stuck (more children may start).

    >>> stall_after(1.0), stall_after(30.0)
    (0.25, 1.0)
    """
    return min(timeout_s / 4, STALL_S)


@dataclass
class Job:
    message: object  # what the child gets, e.g. ("score", payload)
    replies: int  # result messages it answers with
    timeout_s: float
    tag: object = None  # the caller's


@dataclass
class _Running:
    job: Job
    started: float
    left: int

    def deadline(self) -> float:
        return self.started + self.job.timeout_s + GRACE_S


class ChildPool:
    """`make(wait)` returns a new child (`wait=False`: still loading). The first child is
    started and waited for (it checks that the plugins load: RuntimeError if not); the other
    `procs - 1` load in the background."""

    def __init__(self, make, procs: int = 2, max_procs: int = 16):
        self.make, self.procs, self.max_procs = make, max(1, procs), max(1, procs, max_procs)
        self.kills = 0
        self.children: list[IsolatedChild] = [make(True)]
        self.info = self.children[0].ready_info
        try:
            self._top_up()
        except BaseException:
            self.shutdown()
            raise

    def pids(self) -> list[int]:
        return [pid for pid in (c.pid() for c in self.children if c.ready) if pid is not None]

    def run(self, jobs: list[Job], on_reply, on_fail) -> None:
        """Run every job: `on_reply(job, message)` for each result message, `on_fail(job,
        reason)` for a job whose child hung past its deadline (killed) or died."""
        queue, running = deque(jobs), {}
        try:
            while queue or running:
                self._assign(queue, running)
                self._grow(queue, running)
                self._wait(queue, running)
                self._harvest(running, on_reply, on_fail)
        except BaseException:
            for child in running:  # it may still be busy with this batch: never reuse it
                self._remove(child, counted=False)
            raise
        finally:
            self._settle()

    # ---- scheduling ----

    def _assign(self, queue: deque, running: dict) -> None:
        for child in list(self.children):
            if not queue:
                return
            if child in running or not self._is_ready(child):
                continue
            if not child._alive():  # died while idle: nothing was in flight
                self._remove(child)
                continue
            child._send(queue[0].message)
            running[child] = _Running(queue[0], time.perf_counter(), queue[0].replies)
            queue.popleft()

    def _is_ready(self, child: IsolatedChild) -> bool:
        """Has a loading child answered? (Its answer is read here; a failed load raises.)"""
        if not child.ready and (child._results.poll(0) or child.starting_for() > STARTUP_TIMEOUT_S):
            child.finish_start(0.0)
        return child.ready

    def _grow(self, queue: deque, running: dict) -> None:
        """Keep `procs` children; start extras while every child is stuck and jobs wait."""
        self._top_up()
        if not queue or len(running) < len(self.children):
            return  # a child is free or loading: it takes the next job
        now = time.perf_counter()
        if all(now - r.started > stall_after(r.job.timeout_s) for r in running.values()):
            for _ in range(min(len(queue), self.max_procs - len(self.children))):
                self.children.append(self.make(False))

    def _wait(self, queue: deque, running: dict) -> None:
        """Until a result, a loading child's answer, a deadline or (jobs waiting) a stall point."""
        now = time.perf_counter()
        moments = [r.deadline() for r in running.values()]
        if queue:
            moments += [r.started + stall_after(r.job.timeout_s) for r in running.values()]
        soonest = min([m for m in moments if m > now] or [now + 0.5])
        conns = [c._results for c in self.children if c in running or not c.ready]
        wait(conns, timeout=min(0.5, max(0.0, soonest - now)))

    def _harvest(self, running: dict, on_reply, on_fail) -> None:
        for child, r in list(running.items()):
            status = self._drain(child, r, on_reply)
            if status == "timed out" and time.perf_counter() < r.deadline():
                continue
            del running[child]
            if status != "ok":
                reason = child._failure_reason(status, r.job.timeout_s)
                self._remove(child)
                on_fail(r.job, reason)

    @staticmethod
    def _drain(child: IsolatedChild, r: _Running, on_reply) -> str:
        """Read what the child has sent: "ok" when the job is complete, else why not yet."""
        while r.left:
            status, message = child._recv(0.0)
            if status != "ok":
                return status
            r.left -= 1
            on_reply(r.job, message)
        return "ok"

    # ---- the children ----

    def _remove(self, child: IsolatedChild, counted: bool = True) -> None:
        """Kill a hung or dead child (counted in `kills`) and start its replacement."""
        self.kills += counted
        child._kill()
        self.children.remove(child)
        self._top_up()

    def _top_up(self) -> None:
        while len(self.children) < self.procs:
            self.children.append(self.make(False))

    def _settle(self) -> None:
        """Stop the extras started for this batch (loading ones first); `procs` stay."""
        keep = sorted(self.children, key=lambda c: not c.ready)[:self.procs]
        extras = [c for c in self.children if c not in keep]
        self.children = [c for c in self.children if c in keep]
        for child in extras:
            if child.ready:
                child._send(("stop",))
        for child in extras:
            child.shutdown(wait_s=2.0 if child.ready else 0.0)

    def shutdown(self) -> None:
        """Stop every child (politely, at once). Safe to call twice."""
        for child in self.children:
            if child.ready:
                child._send(("stop",))
        for child in self.children:
            child.shutdown()
