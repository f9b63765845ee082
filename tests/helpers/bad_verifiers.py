"""Misbehaving verifiers for the reward-pool tests, named as "tests.helpers.bad_verifiers:<fn>".

`chaos` misbehaves according to the completion text, so one batch can mix good
samples with ones that raise, hang, return NaN, exit or segfault, and a test can
check that only those samples fail.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import time

from rlvr.types import RewardInput, Score


def exact(sample: RewardInput) -> float:
    """1.0 when the stripped completion equals the answer."""
    return float(sample.completion.strip() == sample.answer.strip())


def chaos(sample: RewardInput):
    mode = sample.completion.strip()
    if mode == "raise":
        raise RuntimeError("verifier exploded")
    if mode == "hang":
        while True:
            time.sleep(60)
    if mode == "nan":
        return float("nan")
    if mode == "inf":
        return Score(float("inf"))
    if mode == "none":
        return None
    if mode == "exit":
        os._exit(1)
    if mode == "segfault":
        ctypes.string_at(0)
    if mode == "spawn-and-hang":  # start a helper process, report its pid, then hang
        helper = subprocess.Popen(["sleep", "600"])
        with open(sample.metadata["pid_file"], "w") as f:
            f.write(str(helper.pid))
        while True:
            time.sleep(60)
    return exact(sample)


class Constant:
    """A class verifier with an option: always `value`."""

    def __init__(self, value: float = 1.0):
        self.value = float(value)

    def __call__(self, sample: RewardInput) -> float:
        return self.value


class FailsToLoad:
    def __init__(self):
        raise ValueError("cannot load")

    def __call__(self, sample):  # pragma: no cover
        return 0.0


async def async_exact(sample: RewardInput) -> float:
    """An `async def` verifier, as an LLM judge or remote service would be written."""
    import asyncio

    await asyncio.sleep(0)
    return exact(sample)


def batched_exact(samples: list[RewardInput]) -> list[Score]:
    """A batched verifier: one call scores many samples; `parts` records the call's size.
    Misbehaves for the whole call when one completion says so (raise / hang / short)."""
    modes = {s.completion.strip() for s in samples}
    if "raise" in modes:
        raise RuntimeError("batch exploded")
    if "hang" in modes:
        while True:
            time.sleep(60)
    scores = [Score(exact(s), parts={"call_size": float(len(samples))}) for s in samples]
    return scores[:-1] if "short" in modes else scores


batched_exact.batched = True


class BatchedJudge:
    """A batched, async class verifier with a chunk limit, as an LLM judge would be."""

    batched = True

    def __init__(self, max_batch_size: int = 3):
        self.max_batch_size = max_batch_size

    async def __call__(self, samples: list[RewardInput]) -> list[Score]:
        import asyncio

        await asyncio.sleep(0)
        return [Score(exact(s), parts={"call_size": float(len(samples))}) for s in samples]


def stamped(sample: RewardInput) -> Score:
    """Records when and on what it scored: parts `t` (unix time) and `chars` (completion length)."""
    return Score(1.0, parts={"t": time.time(), "chars": float(len(sample.completion))})


def slow_exact(sample: RewardInput) -> float:
    """`exact`, taking 5 ms a sample (keeps a reward worker busy long enough to kill it mid-batch)."""
    time.sleep(0.005)
    return exact(sample)


def hangs(sample: RewardInput) -> float:
    """Hangs on every sample (a dead judge endpoint, a verifier bug)."""
    time.sleep(1000)
    return 0.0


def env_names(sample: RewardInput) -> Score:
    """Reports the names of the environment variables its process sees, as parts."""
    return Score(1.0, parts={name: 1.0 for name in os.environ})
