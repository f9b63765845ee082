"""Held-out evaluation during training: the main eval set (`data.eval_path`, greedy) and the
named sets of `eval.sets`, each with its own data, verifiers and sampling.

A named set is logged as `eval/<name>/<metric>`: accuracy (share of completions the
first verifier scored >= 1), pass@k and maj@k for k = 1, 2, 4, ... <= n
(`rlvr.eval.metrics`), reward, response_length, failures. A set without `verifiers` uses
`reward.verifiers` and the training reward workers; a set with its own gets a reward
group of its own (one worker, 0 logical CPUs: it only works while the trainers and the
training reward workers wait for the eval). Sets run whenever the main eval runs (step 0,
every `eval.every` steps, the end). Prompts too long for the model are dropped as for
training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rlvr.config.reward import verifier_keys
from rlvr.rollout.group import generate_and_score
from rlvr.run.console import phase_bar
from rlvr.run.metrics import Timer
from rlvr.types import SamplingSpec


@dataclass
class EvalSet:
    name: str
    prompts: list
    spec: SamplingSpec
    verifiers: list | None  # None: the training verifiers and workers
    rewards: object = None  # its own RewardGroup, when it has verifiers
    keys: list = field(default_factory=list)


def prepare_sets(eval_cfg, data_cfg, rollout_cfg, seed: int, tokenizer, max_len: int | None, tools=None,
                 start=None) -> list[EvalSet]:
    """Each named set's rendered prompts (first `num_prompts`, too-long ones dropped; `tools` and
    `start`: multi-turn episodes, see `rlvr.data.prompts.render_prompts`)."""
    from rlvr.data.prompts import drop_too_long, render_prompts
    from rlvr.data.sources import source_rows

    out = []
    for s in eval_cfg.set_items():
        max_tokens = int(s.max_tokens or eval_cfg.max_tokens or rollout_cfg.max_tokens)
        rows = source_rows(s.path, data_cfg, "eval", data_cfg.mix_seed)[: s.num_prompts or eval_cfg.num_prompts]
        prompts = render_prompts(rows, tokenizer, data_cfg, tools, start)
        if max_len:
            prompts, _ = drop_too_long(prompts, max_tokens, max_len, s.path, tokens_key=f"eval.sets.{s.name}")
        temperature = s.temperature if s.temperature is not None else (0.0 if s.n == 1 else 1.0)  # as `rlvr eval`
        spec = SamplingSpec(n=s.n, max_tokens=max_tokens, temperature=float(temperature), seed=seed)
        out.append(EvalSet(s.name, prompts, spec, s.verifiers))
    return out


def primary_key(eval_cfg, reward_cfg) -> str:
    """The verifier whose score of 1 means 'correct' (eval.accuracy_verifier, else the first)."""
    return eval_cfg.accuracy_verifier or verifier_keys(list(reward_cfg.verifiers))[0]


class Evaluator:
    """The held-out evaluation of a run: `due(step)` says when, `run()` does it on the rollout
    group and the reward groups and returns the `eval/...` metrics."""

    def __init__(self, eval_cfg, reward_cfg, rollout_cfg, rollouts, rewards, prompts: list, sets: list[EvalSet],
                 *, total_steps: int, progress: bool = True, timeout_s: float = 1800.0, episodes=None):
        from rlvr.reward.group import RewardGroup

        self.cfg, self.rollouts, self.rewards, self.prompts, self.sets = eval_cfg, rollouts, rewards, prompts, sets
        self.total_steps, self.progress, self.chunks = total_steps, progress, rollout_cfg.chunks_per_engine
        self.episodes = episodes  # multi-turn: every evaluation runs the same episodes as training
        self.primary = primary_key(eval_cfg, reward_cfg)
        self.spec = SamplingSpec(n=1, max_tokens=eval_cfg.max_tokens or rollout_cfg.max_tokens, temperature=0.0)
        for s in sets:
            s.keys = verifier_keys(s.verifiers if s.verifiers is not None else list(reward_cfg.verifiers))
            if s.verifiers is not None:  # its own verifiers: its own worker
                s.rewards = RewardGroup(s.verifiers, reward_cfg, num_workers=1, cpus_per_worker=0, timeout_s=timeout_s)

    def due(self, step: int) -> bool:
        """At the last step and every `eval.every` steps (0: only at the start and the end)."""
        return step == self.total_steps or bool(self.cfg.every and step % self.cfg.every == 0)

    def run(self) -> dict:
        out, t0 = {}, time.perf_counter()
        bar = phase_bar(self.progress, len(self.prompts) + sum(len(s.prompts) for s in self.sets), "eval", unit="prompt")
        if self.prompts:
            counts: dict = {}  # agent episodes: how many were dropped (they count as wrong)
            completions, results = generate_and_score(self.rollouts, self.rewards, self.prompts, self.spec, self.chunks,
                                                      Timer(), self.episodes, counts)
            out = {**main_metrics(results, completions, self.primary, int(counts.get("agent/dropped", 0))),
                   "timing/eval": time.perf_counter() - t0}
            bar.update(len(self.prompts))
        for s in self.sets:
            t0 = time.perf_counter()
            completions, results = generate_and_score(self.rollouts, s.rewards or self.rewards, s.prompts, s.spec,
                                                      self.chunks, Timer(), self.episodes)
            out.update(set_metrics(s.name, completions, results, s.keys))
            out[f"timing/eval_{s.name}"] = time.perf_counter() - t0
            bar.update(len(s.prompts))
        bar.close()
        return out

    def stop(self) -> None:
        for s in self.sets:
            if s.rewards is not None:
                s.rewards.stop()


def main_metrics(results, completions, primary: str, dropped: int = 0) -> dict:
    """eval/... of the main held-out set (greedy, one completion or episode per prompt);
    `dropped` agent episodes (no reward in time) count as wrong."""
    from rlvr.rollout.episodes import episode_metrics

    n = max(1, len(results) + dropped)
    return {
        "eval/accuracy": sum(r.scores.get(primary, 0.0) >= 1.0 for r in results) / n,
        "eval/reward": sum(r.total for r in results) / max(1, len(results)),
        **({"eval/agent/dropped": float(dropped)} if dropped else {}),
        "eval/response_length": sum(c.num_sampled for c in completions) / max(1, len(completions)),
        "eval/failures": sum(bool(r.failures) for r in results),
        **{f"eval/{k}": v for k, v in episode_metrics(completions).items()},
    }


def set_metrics(name: str, completions, results, keys: list[str]) -> dict:
    """eval/<name>/... from one set's completions (grouped by prompt) and rewards."""
    from rlvr.eval.metrics import final_answer, summarize

    first = keys[0]
    samples = [{"correct": r.scores.get(first, 0.0) >= 1.0 and first not in r.failures, "answer": final_answer(c.text),
                "length": c.num_sampled, "scores": r.scores, "failures": r.failures}
               for c, r in zip(completions, results)]
    by_prompt: dict[int, list[dict]] = {}  # n per prompt (fewer where agent episodes were dropped)
    for c, s in zip(completions, samples):
        by_prompt.setdefault(c.prompt_index, []).append(s)
    groups = list(by_prompt.values())
    if not groups:
        return {}
    summary = summarize(groups, keys)
    out = {f"eval/{name}/{k}": v for k, v in summary.items() if k not in ("prompts", "n") and not k.startswith("reward/")}
    out[f"eval/{name}/reward"] = sum(r.total for r in results) / max(1, len(results))
    out[f"eval/{name}/failures"] = sum(bool(r.failures) for r in results)
    return out
