"""From a step's rollouts to training samples and metrics: pure functions, no Ray.

The driver generates and scores; everything between the rewards and the trainer
happens here: DAPO's group filter, reward shaping (overlong penalty, KL in the
reward), advantages, which samples are worth training on, and the step's metrics.
"""

from __future__ import annotations

import torch

from rlvr import algos
from rlvr.config import Config
from rlvr.trainer.batch import TrainSample
from rlvr.types import Completion, SampleReward


def merge_shards(shard_results: list[list[Completion]], shards: list[list]) -> list[Completion]:
    """Concatenate per-engine results, renumbering prompt_index to the full prompt list."""
    out, offset = [], 0
    for part, shard in zip(shard_results, [s for s in shards if s]):
        for c in part:
            c.prompt_index += offset
            out.append(c)
        offset += len(shard)
    return out


def keep_informative_groups(prompts, completions: list[Completion], rewards: list[SampleReward], room: int):
    """DAPO's dynamic-sampling filter: groups whose rewards are not all equal, at most `room` of them.

    Returns (prompts, completions, rewards) of the kept groups, prompt_index renumbered
    from 0, and how many groups were dropped for being uniform.
    """
    by_prompt: dict[int, list[int]] = {}
    for i, c in enumerate(completions):
        by_prompt.setdefault(c.prompt_index, []).append(i)
    kept_p, kept_c, kept_r, dropped = [], [], [], 0
    for p, idx in sorted(by_prompt.items()):
        if len({rewards[i].total for i in idx}) <= 1:
            dropped += 1
            continue
        if len(kept_p) == room:
            continue
        for i in idx:
            completions[i].prompt_index = len(kept_p)
            kept_c.append(completions[i])
            kept_r.append(rewards[i])
        kept_p.append(prompts[p])
    return kept_p, kept_c, kept_r, dropped


def shaped_rewards(completions: list[Completion], rewards: list[SampleReward], cfg: Config) -> torch.Tensor:
    """The verifiers' totals plus DAPO's overlong penalty when enabled."""
    totals = torch.tensor([r.total for r in rewards], dtype=torch.float32)
    ol = cfg.algorithm.overlong
    if ol.enabled:
        lengths = torch.tensor([len(c.token_ids) for c in completions], dtype=torch.float32)
        totals = totals + ol.weight * algos.overlong_penalty(lengths, cfg.rollout.max_tokens, ol.cache_len)
    return totals


def candidate_samples(prompts, completions: list[Completion]) -> list[TrainSample]:
    """Every completion as a TrainSample with a zero advantage (for reference-KL passes)."""
    return [TrainSample(prompts[c.prompt_index].token_ids, c.token_ids, 0.0, c.logprobs) for c in completions]


def build_samples(prompts, completions: list[Completion], totals: torch.Tensor, cfg: Config):
    """Group advantages, then the samples worth training on; returns (samples, metrics,
    per-completion advantages)."""
    totals = totals.to(torch.float32)
    groups = torch.tensor([c.prompt_index for c in completions], dtype=torch.long)
    advantages = algos.ADVANTAGES[cfg.algorithm.advantage](totals, groups, eps=cfg.algorithm.advantage_eps)
    uniform = algos.uniform_groups(totals, groups)
    keep = ~uniform if cfg.algorithm.skip_uniform_groups else torch.ones_like(uniform)
    samples = [TrainSample(prompts[c.prompt_index].token_ids, c.token_ids, float(a), c.logprobs)
               for c, a, k in zip(completions, advantages.tolist(), keep.tolist()) if k and c.token_ids]
    stats = {"groups/uniform_fraction": uniform.float().mean().item() if len(uniform) else 0.0,
             "samples/trained": len(samples),
             "advantage/abs_mean": advantages.abs().mean().item() if len(advantages) else 0.0}
    return samples, stats, advantages.tolist()


def mean_staleness(completions: list[Completion], trainer_version: int) -> float:
    """How many updates behind the trainer the generating weights were, on average (0: on-policy)."""
    if not completions:
        return 0.0
    return sum(trainer_version - c.weight_version for c in completions) / len(completions)


def sample_records(step: int, prompts, completions: list[Completion], rewards: list[SampleReward],
                   advantages: list[float], limit: int) -> list[dict]:
    """The first `limit` samples of a step as JSON-ready rows for the sample browser."""
    rows = []
    for c, r, a in list(zip(completions, rewards, advantages))[:limit]:
        p = prompts[c.prompt_index]
        rows.append({"step": step, "prompt": p.text, "completion": c.text, "answer": p.answer,
                     "reward": r.total, "scores": r.scores, "failures": r.failures, "parts": r.parts,
                     "advantage": a, "length": len(c.token_ids), "finish_reason": c.finish_reason,
                     "weight_version": c.weight_version})
    return rows


def batch_metrics(completions: list[Completion], rewards: list[SampleReward], primary: str) -> dict:
    """Reward, accuracy and length statistics of everything generated this step."""
    from rlvr.reward.pool import reward_metrics

    totals = torch.tensor([r.total for r in rewards], dtype=torch.float32)
    lengths = torch.tensor([len(c.token_ids) for c in completions], dtype=torch.float32)
    n = max(1, len(rewards))
    return {
        "reward/mean": totals.mean().item(),
        "reward/std": totals.std(unbiased=False).item(),
        "accuracy": sum(r.scores.get(primary, 0.0) >= 1.0 for r in rewards) / n,
        "response_length/mean": lengths.mean().item(),
        "response_length/max": lengths.max().item(),
        "response/clipped_fraction": sum(c.finish_reason == "length" for c in completions) / n,
        "tokens/generated": int(lengths.sum().item()),
        **reward_metrics(rewards),
    }


def loss_denominator(samples: list[TrainSample], aggregation: str) -> float:
    """The global normaliser of the step's loss: valid tokens (token_mean) or sequences."""
    if aggregation == "token_mean":
        return float(sum(len(s.completion_ids) for s in samples))
    return float(len(samples))


def reduce_train_stats(results: list[dict]) -> dict:
    """Combine per-rank train stats: sums for the loss, token-weighted means for the rest."""
    tokens = sum(r["tokens"] for r in results) or 1.0

    def mean(key: str) -> float:
        return sum(r.get(key, 0.0) for r in results) / tokens

    return {
        "loss": sum(r["loss"] for r in results),
        "grad_norm": results[0]["grad_norm"],
        "lr": results[0]["lr"],
        "tokens/trained": tokens,
        "train/logprob_diff": mean("logprob_diff_sum"),  # |engine - trainer| log-prob per token
        "train/entropy": mean("entropy_sum"),
        "train/kl": mean("kl_sum"),
        "train/clip_fraction": mean("clip_fraction_sum"),
        "train/approx_kl": mean("approx_kl_sum"),
        "train/worker_s": max(r.get("time", 0.0) for r in results),  # inside the ranks (the rest: Ray calls)
    }


def step_seed(run_seed: int, step: int) -> int:
    """The sampling seed of a step's rollouts (each prompt adds its index): a step samples the
    same completions from the same weights however the run got there (resumed or not).

    >>> step_seed(0, 1), step_seed(0, 2), step_seed(1, 1)
    (10007, 20014, 1000010007)
    """
    return (run_seed * 1_000_000_000 + step * 10_007) % (2**31 - 1)


def verify_due(sync, version: int) -> bool:
    """`sync.verify`: always, never, or at the first sync and every `verify_every` syncs.

    >>> from rlvr.config import SyncConfig
    >>> [v for v in range(1, 8) if verify_due(SyncConfig(verify="every_n", verify_every=3), v)]
    [1, 3, 6]
    """
    return sync.verify == "always" or (sync.verify == "every_n" and (version == 1 or version % sync.verify_every == 0))
