"""`rlvr eval` and `rlvr sample`: a model (hub id, HF folder or rlvr checkpoint) through vLLM
and the reward pool, outside of training.

    rlvr eval MODEL --data FILE [--reward math[,format]] [--n K] [--out DIR]
        accuracy, pass@k (unbiased estimator) and maj@k for k = 1, 2, 4, ... <= K, mean
        response length, each verifier's mean and failures; DIR/summary.json and
        DIR/samples.jsonl (one line per completion).
    rlvr sample MODEL --data FILE --n K --keep best|all-correct|threshold --out FILE.jsonl
        K completions per prompt, scored; the kept ones written as {"messages": [...]}
        rows (the prompt's messages + the assistant's completion), ready for SFT
        (rejection sampling / distillation), with a summary of how many prompts kept one.

One process: the vLLM engine runs in it (in-process executor, as in the rollout actors)
and the verifiers in a reward-worker child process with the same hard timeouts as in
training (`rlvr.reward.pool.RewardWorker`). No Ray. `--data builtin:arithmetic` is the
built-in task's held-out split, the one training evaluates on.

"Correct" means the first verifier (the accuracy verifier) scored >= 1, as in training.
maj@k: the most frequent final answer among the first k completions (the text after a
think block: the last `\\boxed{}`, else the last number, else the whole stripped text;
ties go to the answer seen first), correct if that answer's completions were.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections import Counter

EXIT_USAGE = 2
KEEP_MODES = ("best", "all-correct", "threshold")


# --------------------------------------------------------------------------- metrics (pure)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), pass_at_k(4, 0, 2)
    (0.25, 1.0, 0.0)
    """
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def final_answer(text: str) -> str:
    """The answer a completion commits to, for majority voting (see the module doc).

    >>> final_answer("<think>7?</think> so \\\\boxed{12}."), final_answer("it is 3, no 4"), final_answer(" x ")
    ('12', '4', 'x')
    """
    from rewards.format import split_think

    answer, _ = split_think(text)
    answer = answer if answer is not None else ""
    boxed = _last_boxed(answer)
    if boxed is not None:
        return boxed.strip()
    numbers = re.findall(r"-?\d+(?:\.\d+)?", answer)
    return numbers[-1] if numbers else answer.strip()


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def majority_correct(answers: list[str], correct: list[bool]) -> bool:
    """Whether the most frequent answer (first seen wins ties) was a correct one."""
    counts = Counter(answers)
    top = max(answers, key=lambda a: (counts[a], -answers.index(a)))
    return any(ok for a, ok in zip(answers, correct) if a == top)


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks = [k for k in (2 ** i for i in range(20)) if k <= n]
    return ks + ([n] if n not in ks else [])


def summarize(groups: list[list[dict]], keys: list[str]) -> dict:
    """Metrics over prompts, each a list of its scored completions ({correct, answer, length,
    scores, failures})."""
    n = min(len(g) for g in groups)
    out: dict = {"prompts": len(groups), "n": n,
                 "accuracy": _mean([s["correct"] for g in groups for s in g]),
                 "response_length/mean": _mean([s["length"] for g in groups for s in g])}
    for k in k_values(n):
        out[f"pass@{k}"] = _mean([pass_at_k(len(g), sum(s["correct"] for s in g), k) for g in groups])
        out[f"maj@{k}"] = _mean([majority_correct([s["answer"] for s in g[:k]], [s["correct"] for s in g[:k]])
                                 for g in groups])
    for key in keys:
        out[f"reward/{key}/mean"] = _mean([s["scores"].get(key, 0.0) for g in groups for s in g])
        out[f"reward/{key}/failures"] = sum(key in s["failures"] for g in groups for s in g)
    return out


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else 0.0


def keep_samples(group: list[dict], mode: str, threshold: float) -> list[dict]:
    """Which completions of one prompt `rlvr sample` keeps: `best` (the highest total reward,
    if it is correct), `all-correct`, or `threshold` (total >= threshold). Equal texts once."""
    if mode == "best":
        best = max(group, key=lambda s: s["reward"]) if group else None
        chosen = [best] if best is not None and best["correct"] else []
    elif mode == "all-correct":
        chosen = [s for s in group if s["correct"]]
    elif mode == "threshold":
        chosen = [s for s in group if s["reward"] >= threshold]
    else:
        raise ValueError(f"--keep must be one of {KEEP_MODES}, got {mode!r}")
    seen, out = set(), []
    for s in chosen:
        if s["completion"] not in seen:
            seen.add(s["completion"])
            out.append(s)
    return out


# --------------------------------------------------------------------------- running a model


def load_rows(data: str, limit: int | None) -> list[dict]:
    """Any data source (rlvr.datamix: files, `datasets` folders, hf:name, `#N`); builtin:arithmetic
    means its held-out split."""
    from rlvr.config import DataConfig
    from rlvr.datamix import source_rows

    rows = source_rows(data, DataConfig(), split="eval")
    return rows[:limit] if limit else rows


def prompt_messages(row: dict, system_prompt: str | None) -> list[dict]:
    messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + list(messages)


def generate_and_score(args, rows: list[dict]) -> tuple[list[list[dict]], list[str], dict]:
    """Every row's `args.n` completions, scored: (per-prompt lists of sample dicts, verifier keys, timings)."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from rlvr import data as data_mod
    from rlvr.config import DataConfig, RolloutConfig
    from rlvr.reward.pool import RewardWorker
    from rlvr.types import RewardInput, SamplingSpec

    timings = {}
    model = _resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    data_cfg = DataConfig(system_prompt=args.system_prompt, enable_thinking=args.enable_thinking,
                          apply_chat_template=not args.no_chat_template and data_mod.has_chat_template(tokenizer))
    prompts = data_mod.render_prompts(rows, tokenizer, data_cfg)
    verifiers = [{"name": name.strip()} for name in args.reward.split(",") if name.strip()]
    worker = RewardWorker(verifiers, default_timeout_s=args.timeout_s)
    t0 = time.perf_counter()
    print(f"[rlvr] starting vLLM on {args.model} ...", file=sys.stderr, flush=True)
    from rlvr.rollout.vllm_engine import VLLMEngine

    engine = VLLMEngine(model, RolloutConfig(num_threads=args.threads), seed=args.seed, dtype=args.dtype)
    timings["engine_start_s"] = time.perf_counter() - t0
    temperature = args.temperature if args.temperature is not None else (0.0 if args.n == 1 else 1.0)
    spec = SamplingSpec(n=args.n, max_tokens=args.max_tokens, temperature=temperature, top_p=args.top_p,
                        seed=args.seed)
    groups: list[list[dict]] = []
    t_gen = t_score = 0.0
    try:
        with tqdm(total=len(prompts), desc="generate+score", unit="prompt", file=sys.stderr,
                  disable=not args.progress) as bar:
            for start in range(0, len(prompts), args.chunk):
                chunk = prompts[start:start + args.chunk]
                t = time.perf_counter()
                completions = engine.generate([p.token_ids for p in chunk], spec)
                t_gen += time.perf_counter() - t
                t = time.perf_counter()
                rewards = worker.score([RewardInput(chunk[c.prompt_index].text, c.text, chunk[c.prompt_index].answer,
                                                    chunk[c.prompt_index].metadata) for c in completions])
                t_score += time.perf_counter() - t
                by_prompt: list[list[dict]] = [[] for _ in chunk]
                for c, r in zip(completions, rewards):
                    first = worker.keys[0]
                    by_prompt[c.prompt_index].append({
                        "completion": c.text, "answer": final_answer(c.text), "length": len(c.token_ids),
                        "finish_reason": c.finish_reason, "reward": r.total, "scores": r.scores,
                        "failures": r.failures, "correct": r.scores.get(first, 0.0) >= 1.0 and first not in r.failures})
                for i, group in enumerate(by_prompt):
                    row = rows[start + i]
                    for s in group:
                        s.update(prompt=chunk[i].text, reference=chunk[i].answer, row=start + i)
                    groups.append(group)
                    group_messages = prompt_messages(row, args.system_prompt)
                    for s in group:
                        s["messages"] = group_messages
                bar.update(len(chunk))
    finally:
        worker.shutdown()
    timings.update(generate_s=t_gen, score_s=t_score)
    return groups, list(worker.keys), timings


def _resolve_model(path: str) -> str:
    """An rlvr checkpoint folder, an HF folder or a hub id; a run folder means its final checkpoint."""
    final = os.path.join(path, "checkpoints", "final")
    path = final if os.path.isdir(final) else os.path.expanduser(path)
    if os.path.isfile(os.path.join(path, "adapter_config.json")) and not os.path.isfile(os.path.join(path, "config.json")):
        raise SystemExit(f"rlvr: {path} holds a LoRA adapter only: merge it first "
                         f"(rlvr export {path} OUT --merge) and evaluate OUT")
    return path


def _write_atomic(path: str, lines: list[str]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- commands


def cmd_eval(args) -> int:
    rows = _rows_or_exit(args)
    if rows is None:
        return EXIT_USAGE
    groups, keys, timings = generate_and_score(args, rows)
    summary = {"model": args.model, "data": args.data, "reward": args.reward, **summarize(groups, keys), **timings}
    out = args.out or os.path.join("evals", f"{os.path.basename(os.path.normpath(args.model))}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(out, exist_ok=True)
    _write_atomic(os.path.join(out, "samples.jsonl"),
                  [json.dumps({k: v for k, v in s.items() if k != "messages"}) + "\n" for g in groups for s in g])
    _write_atomic(os.path.join(out, "summary.json"), [json.dumps(summary, indent=1) + "\n"])
    width = max(len(k) for k in summary)
    for k, v in summary.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(f"[rlvr] wrote {out}/summary.json and {out}/samples.jsonl")
    return 0


def cmd_sample(args) -> int:
    if args.keep == "threshold" and args.threshold is None:
        print("rlvr sample: --keep threshold needs --threshold X", file=sys.stderr)
        return EXIT_USAGE
    rows = _rows_or_exit(args)
    if rows is None:
        return EXIT_USAGE
    groups, keys, timings = generate_and_score(args, rows)
    lines, kept_prompts = [], 0
    for group in groups:
        kept = keep_samples(group, args.keep, args.threshold or 0.0)
        kept_prompts += bool(kept)
        for s in kept:
            lines.append(json.dumps({"messages": s["messages"] + [{"role": "assistant", "content": s["completion"]}],
                                     "answer": s["reference"], "reward": s["reward"], "scores": s["scores"],
                                     "source_row": s["row"]}) + "\n")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    _write_atomic(args.out, lines)
    summary = {"model": args.model, "data": args.data, "keep": args.keep, "prompts": len(groups),
               "prompts_kept": kept_prompts, "samples_kept": len(lines),
               "accuracy": summarize(groups, keys)["accuracy"], **timings}
    _write_atomic(args.out + ".summary.json", [json.dumps(summary, indent=1) + "\n"])
    print(f"[rlvr] kept {len(lines)} samples; {kept_prompts} of {len(groups)} prompts kept at least one "
          f"({kept_prompts / max(len(groups), 1):.1%}) -> {args.out}")
    return 0


def _rows_or_exit(args) -> list[dict] | None:
    from rlvr.data import DatasetError

    try:
        return load_rows(args.data, args.limit)
    except DatasetError as e:
        print(f"rlvr {args.command}: data error: {e}", file=sys.stderr)
        return None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="hub id, HF model folder, rlvr checkpoint, or run folder (its final checkpoint)")
    p.add_argument("--data", required=True, help=".jsonl / .parquet file (prompt or messages + answer), or builtin:arithmetic")
    p.add_argument("--reward", default="math", help="verifier names, comma-separated; the first decides 'correct' (default: math)")
    p.add_argument("--n", type=int, default=1, help="completions per prompt (default 1)")
    p.add_argument("--temperature", type=float, default=None, help="default: 0 (greedy) for --n 1, else 1.0")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=1024, help="max new tokens per completion (default 1024)")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows")
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--no-chat-template", action="store_true", help="raw prompts (base models)")
    p.add_argument("--enable-thinking", type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                   help="Qwen3's thinking switch for the chat template (true/false)")
    p.add_argument("--timeout-s", type=float, default=5.0, help="hard kill per sample and verifier (default 5)")
    p.add_argument("--dtype", default="auto", help="vLLM dtype (default auto; float32 on CPU for exact figures)")
    p.add_argument("--threads", type=int, default=2, help="engine threads on CPU (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=256, help="prompts per generate call (progress granularity)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="accuracy, pass@k, maj@k of a model on a dataset (vLLM + verifiers)")
    _common(p)
    p.add_argument("--out", default=None, help="output folder (default: evals/<model>-<time>)")
    p.set_defaults(fn=cmd_eval)
    p = subparsers.add_parser("sample", help="rejection sampling: keep scored completions as a messages dataset")
    _common(p)
    p.add_argument("--keep", choices=KEEP_MODES, required=True)
    p.add_argument("--threshold", type=float, default=None, help="with --keep threshold: minimum total reward")
    p.add_argument("--out", required=True, help="output .jsonl ({\"messages\": [...]} rows)")
    p.set_defaults(fn=cmd_sample)
