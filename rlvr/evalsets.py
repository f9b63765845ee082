"""Held-out evaluation during training: the main eval set (`data.eval_path`) and the named
sets of `eval.sets`, each with its own data, verifiers and sampling.

    eval:
      every: 10
      sets:
        - {name: gsm8k, path: data/gsm8k_test.jsonl, num_prompts: 200}   # greedy (temperature 1 when n > 1)
        - {name: aime, path: data/aime.jsonl, n: 8, temperature: 0.6, max_tokens: 4096,
           verifiers: [{name: math}, {name: format, require_think: true}]}

A named set is logged as `eval/<name>/<metric>`: accuracy (share of completions the
first verifier scored >= 1), pass@k and maj@k for k = 1, 2, 4, ... <= n (`rlvr.evaluate`),
reward, response_length, failures. A set without `verifiers` uses `reward.verifiers` and the
training reward workers; a set with its own gets one reward worker of its own, started with
the other actors (0 logical CPUs: it only works while the trainers and the training reward
workers wait for the eval). Sets run whenever the main eval runs (step 0, every
`eval.every` steps, the end). Prompts too long for the model are dropped as for training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rlvr.config import Config
from rlvr.types import SamplingSpec

SET_KEYS = {"name", "path", "num_prompts", "verifiers", "n", "temperature", "max_tokens"}
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class EvalSet:
    name: str
    prompts: list
    spec: SamplingSpec
    verifiers: list | None  # None: the training verifiers and workers
    workers: list = field(default_factory=list)


def check_sets(sets: list) -> tuple[str, str] | None:
    """The first problem of `eval.sets` as (key, message), for recipe validation."""
    from rlvr.datamix import source_problem, split_count

    seen = set()
    for i, s in enumerate(sets):
        key = f"eval.sets[{i}]"
        if not isinstance(s, dict) or not {"name", "path"} <= set(s):
            return key, "needs at least {name, path}"
        if set(s) - SET_KEYS:
            return key, f"unknown keys {sorted(set(s) - SET_KEYS)} (have {sorted(SET_KEYS)})"
        if not NAME.match(str(s["name"])) or s["name"] in seen:
            return f"{key}.name", f"must be unique and made of letters, digits, _ . - (got {s['name']!r})"
        seen.add(s["name"])
        problem = source_problem(split_count(str(s["path"]))[0])
        if problem:
            return f"{key}.path", problem
        for k in ("num_prompts", "n", "max_tokens"):
            if k in s and not (isinstance(s[k], int) and not isinstance(s[k], bool) and s[k] >= 1):
                return f"{key}.{k}", "must be an integer >= 1"
        if "temperature" in s and not (isinstance(s["temperature"], (int, float)) and s["temperature"] >= 0):
            return f"{key}.temperature", "must be >= 0"
        if s.get("n", 1) > 1 and s.get("temperature", 1.0) == 0:
            return f"{key}.temperature", "must be > 0 when n > 1 (greedy samples would all be the same)"
        if "verifiers" in s and not (isinstance(s["verifiers"], list) and s["verifiers"]):
            return f"{key}.verifiers", "must be a non-empty list like reward.verifiers"
    return None


def prepare(cfg: Config, tokenizer, max_len: int | None) -> list[EvalSet]:
    """Each named set's rendered prompts (first `num_prompts`, too-long ones dropped)."""
    from rlvr.data import drop_too_long, render_prompts
    from rlvr.datamix import source_rows

    out = []
    for s in cfg.eval.sets:
        max_tokens = int(s.get("max_tokens") or cfg.eval.max_tokens or cfg.rollout.max_tokens)
        rows = source_rows(str(s["path"]), cfg.data, "eval", cfg.data.mix_seed)[: int(s.get("num_prompts", cfg.eval.num_prompts))]
        prompts = render_prompts(rows, tokenizer, cfg.data)
        if max_len:
            prompts, _ = drop_too_long(prompts, max_tokens, max_len, str(s["path"]), tokens_key=f"eval.sets.{s['name']}")
        n = int(s.get("n", 1))  # default temperature: greedy for one sample, 1.0 for several (as `rlvr eval`)
        spec = SamplingSpec(n=n, max_tokens=max_tokens, temperature=float(s.get("temperature", 0.0 if n == 1 else 1.0)),
                            seed=cfg.run.seed)
        out.append(EvalSet(str(s["name"]), prompts, spec, [dict(v) for v in s["verifiers"]] if "verifiers" in s else None))
    return out


def start_workers(cfg: Config, sets: list[EvalSet]) -> list:
    """One reward worker per set with its own verifiers; returns every handle started."""
    import ray

    from rlvr.reward.pool import RewardWorker

    handles = []
    for s in sets:
        if s.verifiers is not None:
            s.workers = [ray.remote(num_cpus=0)(RewardWorker).remote(s.verifiers, cfg.reward.timeout_s,
                                                                      cfg.reward.failure_score)]
            handles += s.workers
    ray.get([h.ping.remote() for h in handles])
    return handles


def primary_key(cfg: Config) -> str:
    """The verifier whose score of 1 means 'correct' (eval.accuracy_verifier, else the first)."""
    from rlvr.reward.pool import verifier_keys

    return cfg.eval.accuracy_verifier or verifier_keys(list(cfg.reward.verifiers))[0]


def main_metrics(results, completions, cfg: Config) -> dict:
    """eval/... of the main held-out set (greedy, one completion per prompt)."""
    primary = primary_key(cfg)
    n = max(1, len(results))
    return {
        "eval/accuracy": sum(r.scores.get(primary, 0.0) >= 1.0 for r in results) / n,
        "eval/reward": sum(r.total for r in results) / n,
        "eval/response_length": sum(len(c.token_ids) for c in completions) / max(1, len(completions)),
        "eval/failures": sum(bool(r.failures) for r in results),
    }


def set_metrics(name: str, completions, results, keys: list[str], n: int) -> dict:
    """eval/<name>/... from one set's completions (grouped n per prompt, in order) and rewards."""
    from rlvr.evaluate import final_answer, summarize

    first = keys[0]
    samples = [{"correct": r.scores.get(first, 0.0) >= 1.0 and first not in r.failures, "answer": final_answer(c.text),
                "length": len(c.token_ids), "scores": r.scores, "failures": r.failures}
               for c, r in zip(completions, results)]
    groups = [samples[i:i + n] for i in range(0, len(samples), n)]
    if not groups:
        return {}
    summary = summarize(groups, keys)
    out = {f"eval/{name}/{k}": v for k, v in summary.items() if k not in ("prompts", "n") and not k.startswith("reward/")}
    out[f"eval/{name}/reward"] = sum(r.total for r in results) / max(1, len(results))
    out[f"eval/{name}/failures"] = sum(bool(r.failures) for r in results)
    return out


def run_sets(sets: list[EvalSet], engines, rewarders, cfg: Config, generate_and_score, recover=None,
             on_done=lambda n: None) -> dict:
    """Evaluate every named set (the driver passes its `generate_and_score`); `on_done(prompts)`
    after each set (the eval progress bar)."""
    import time

    from rlvr.metrics import Timer
    from rlvr.reward.pool import verifier_keys

    out = {}
    for s in sets:
        t0 = time.perf_counter()
        workers = s.workers or rewarders
        completions, results = generate_and_score(engines, workers, s.prompts, s.spec, cfg.rollout.chunks_per_engine,
                                                  Timer(), cfg.cluster.rpc_timeout_s, recover if not s.workers else None)
        keys = verifier_keys(s.verifiers if s.verifiers is not None else list(cfg.reward.verifiers))
        out.update(set_metrics(s.name, completions, results, keys, s.spec.n))
        out[f"timing/eval_{s.name}"] = time.perf_counter() - t0
        on_done(len(s.prompts))
    return out
