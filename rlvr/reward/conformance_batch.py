"""The conformance kit's checks for batched verifiers (`batched = True`): `batch_count` and
`batch_order` (see `rlvr.reward.conformance`).

A batched verifier checked with one sample at a time cannot show that it returns one result
per sample in the right order: one that always returns a single result, or its results
reversed, looks right. So the kit builds a batch of at least `MIN_BATCH` samples (the
samples and the variants already scored alone, repeated and shuffled), scores it, scores
the same batch permuted, and compares each sample's result with its result alone.
"""

from __future__ import annotations

import math
import time

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
MIN_BATCH = 16  # samples in the batch a batched verifier is checked with (at least)
MAX_BATCH = 256


def _outcome(reward, key: str):
    """What is compared: the value, or "failed"."""
    return "failed" if key in reward.failures else round(reward.scores[key], 9)


def _differ(a, b) -> bool:
    """Two outcomes of one sample differ: one failed, or values apart by more than a relative 1e-6
    (a model verifier is not bit-exact in a padded batch; `conformance._same`)."""
    if "failed" in (a, b):
        return a != b
    return not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def check_batches(kit, singles: list) -> None:
    """Add `batch_count` and `batch_order` to `kit` (a `conformance._Kit`). `singles`: the
    (sample, result alone) pairs the batch is made from (empty: skip both)."""
    if not singles:
        for name in ("batch_count", "batch_order"):
            kit.add(name, SKIP, "no sample was scored alone to compare with")
        return
    key, rng = kit.key, kit.rng
    n = min(MAX_BATCH, max(MIN_BATCH, 2 * len(singles)))
    order = [i % len(singles) for i in range(n)]
    rng.shuffle(order)
    batch = [singles[i][0] for i in order]
    t = time.perf_counter()
    first = kit.worker.score(batch)
    kit.seen.extend(first)
    seconds = time.perf_counter() - t
    calls = -(-n // kit.worker.batch_sizes[0])
    count_errors = [r.failures[key] for r in first if "batched verifier returned" in r.failures.get(key, "")]
    broken = [j for j, r in enumerate(first) if key in r.failures and key not in singles[order[j]][1].failures]
    if count_errors:
        kit.add("batch_count", FAIL, f"{count_errors[0]} ({len(count_errors)}/{n} samples)", seconds)
    elif broken:
        kit.add("batch_count", FAIL, f"{len(broken)}/{n} samples scored alone failed in the batch: "
                f"{first[broken[0]].failures[key]}", seconds)
    else:
        kit.add("batch_count", PASS, f"{n} samples in {calls} call(s), one result each", seconds)
    _check_order(kit, singles, order, first, bool(count_errors or len(broken) == n))


def _check_order(kit, singles: list, order: list[int], first: list, batch_failed: bool) -> None:
    key = kit.key
    alone = [_outcome(singles[i][1], key) for i in order]
    if batch_failed:
        kit.add("batch_order", SKIP, "the batch call failed (see batch_count)")
        return
    if len(set(alone)) < 2:
        kit.add("batch_order", SKIP, f"every sample scores the same ({alone[0]}): nothing to tell apart; "
                "pass --samples with rows that score differently")
        return
    t = time.perf_counter()
    perm = list(range(len(order)))
    while perm == sorted(perm):
        kit.rng.shuffle(perm)
    second = kit.worker.score([singles[order[p]][0] for p in perm])
    kit.seen.extend(second)
    wrong = [(j, "batch", _outcome(first[j], key), alone[j]) for j in range(len(order))
             if _differ(_outcome(first[j], key), alone[j])]
    wrong += [(j, "permuted batch", _outcome(second[j], key), alone[perm[j]]) for j in range(len(order))
              if _differ(_outcome(second[j], key), alone[perm[j]])]
    if wrong:
        j, where, got, want = wrong[0]
        kit.add("batch_order", FAIL, f"{len(wrong)} result(s) do not follow their sample: in the {where}, "
                f"sample {j} got {got}, alone it gets {want}", time.perf_counter() - t)
    else:
        kit.add("batch_order", PASS, f"{len(order)} samples, batch and permuted batch match the samples "
                f"scored alone", time.perf_counter() - t)
