"""Ray actors of one plain worker class (reward workers, tool workers) as a group: spread a batch
of items over them, collect the results in order, and replace a worker that dies (its share
is run again on another worker). `rlvr.reward.group.RewardGroup` and
`rlvr.tools.group.ToolGroup` are this with their own items. `split_evenly` is how every group
(the engines' too) shards a batch."""

from __future__ import annotations

import threading
import time
from typing import Sequence, TypeVar

from rlvr.cluster.logs import actor_class
from rlvr.cluster.remote import RemoteCallError, actor_died, one_line, places, wait_all

T = TypeVar("T")


class WorkerGroup:
    """`cls(*args)` as `num` Ray actors of `cpus` logical CPUs (and `gpus` GPUs) each; `label` names
    them in messages."""

    def __init__(self, cls, args: tuple, num: int, cpus: float, *, label: str, timeout_s: float = 1800.0,
                 gpus: float = 0.0, wait: bool = True):
        self.cls, self.args, self.cpus, self.label, self.timeout_s = cls, args, cpus, label, timeout_s
        self.gpus = gpus
        self.restarts = 0
        self._lock = threading.Lock()  # a replacement at a time (rollouts run in a background thread too)
        self._workers = [self._start() for _ in range(num)]
        self._starting = [w.ping.remote() for w in self._workers]
        if wait:
            self.wait_started()

    def wait_started(self) -> None:
        """Wait until every worker has started (`wait=False` starts them in the background)."""
        starting, self._starting = self._starting, []
        wait_all(starting, f"starting the {self.label}s", self.timeout_s)

    def _start(self):
        import ray

        return ray.remote(num_cpus=self.cpus, num_gpus=self.gpus)(actor_class(self.cls, self.label)).remote(*self.args)

    @property
    def handles(self) -> list:
        return list(self._workers)

    def submit(self, method: str, items: list) -> list:
        """Start `method(share)` on each worker with its contiguous share of `items`; returns, in
        order, one `(worker index, share, result ref)` per non-empty share, for `collect`."""

        return [(i, share, getattr(self._workers[i], method).remote(share))
                for i, share in enumerate(split_evenly(items, len(self._workers))) if share]

    def collect(self, pending: list, method: str, timeout_s: float | None = None) -> list:
        """The results of what `submit` started, concatenated in order. A worker that died is
        replaced and its share run again on another worker."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        out: list = []
        for worker, share, ref in pending:
            try:
                out += wait_all([ref], f"{method} on {self.label} {worker}", max(1.0, deadline - time.monotonic()))[0]
            except RemoteCallError as e:
                if not actor_died(e):
                    raise
                retry = self.replace(worker, e)
                out += wait_all([getattr(self._workers[retry], method).remote(share)], f"{method} on {self.label} {retry}",
                                self.timeout_s)[0]
        return out

    def replace(self, i: int, error: BaseException) -> int:
        """Start a new worker in place of worker i; returns the worker to run its share again."""
        import ray

        with self._lock:
            print(f"[rlvr] fault: {self.label} {i} died ({one_line(error)}); starting a replacement", flush=True)
            self.restarts += 1
            ray.kill(self._workers[i])
            self._workers[i] = self._start()
            return (i + 1) % len(self._workers)

    def places(self) -> list[dict]:
        return places(self._workers)

    def stop(self) -> None:
        import ray

        for w in self._workers:
            try:
                ray.get(w.shutdown.remote(), timeout=30)
            except Exception:
                pass
            ray.kill(w)


def split_evenly(items: Sequence[T], k: int, group_size: int = 1) -> list[list[T]]:
    """Split `items` into `k` contiguous slices whose sizes differ by at most one group.

    Runs of `group_size` consecutive items (a prompt's samples, say) are never
    split. Trailing slices are empty when there are fewer groups than `k`.

    >>> split_evenly(list(range(7)), 3)
    [[0, 1, 2], [3, 4], [5, 6]]
    >>> split_evenly(list("aabbcc"), 2, group_size=2)
    [['a', 'a', 'b', 'b'], ['c', 'c']]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if group_size < 1 or len(items) % group_size:
        raise ValueError(f"{len(items)} items do not form whole groups of {group_size}")
    groups = len(items) // group_size
    base, extra = divmod(groups, k)
    slices, start = [], 0
    for i in range(k):
        end = start + (base + (1 if i < extra else 0)) * group_size
        slices.append(list(items[start:end]))
        start = end
    return slices
