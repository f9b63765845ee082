"""`rlvr eval` and `rlvr sample`: a model through vLLM and the verifiers (`rlvr.eval.offline`).

    rlvr eval MODEL --data FILE [--reward math[,format]] [--n K] [--out DIR]
        accuracy, pass@k (unbiased estimator) and maj@k for k = 1, 2, 4, ... <= K, mean
        response length, each verifier's mean and failures; DIR/summary.json and
        DIR/samples.jsonl (one line per completion).
    rlvr eval MODEL --data FILE --verifiers '[{name: reward_model, path: RM}, {name: judge, ...}]' [--judge-model J]
        verifiers with options (a YAML list as a recipe's reward.verifiers); --judge-model starts
        a judge engine (on a private local Ray cluster) that the judge verifiers ask.
    rlvr sample MODEL --data FILE --n K --keep best|all-correct|threshold --out FILE.jsonl
        K completions per prompt, scored; the kept ones written as {"messages": [...]}
        rows (the prompt's messages + the assistant's completion), ready for SFT
        (rejection sampling / distillation), with a summary of how many prompts kept one;
        `rlvr sft RECIPE sft.train_path=FILE.jsonl` trains on them (rlvr.loop.sft).

With `--tools calc,python` (and `--env`, `--max-turns`, `--max-total-tokens`, `--parser`,
`--tool-timeout-s`, as `rollout.multi_turn` in a recipe) each completion is a multi-turn
episode run as in training: pass@k is over whole trajectories, samples.jsonl has each
episode's conversation, the summary its `multi_turn/*` figures, and `rlvr sample` keeps
the whole conversation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from rlvr.eval.metrics import KEEP_MODES, keep_samples, summarize
from rlvr.eval.offline import generate_and_score_model
from rlvr.run.files import atomic_write_text
from rlvr.tools.calls import PARSERS

EXIT_USAGE = 2


def cmd_eval(args) -> int:
    if not _verifiers_ok(args):
        return EXIT_USAGE
    rows = _rows_or_exit(args)
    if rows is None:
        return EXIT_USAGE
    groups, keys, timings = generate_and_score_model(args, rows)
    summary = {"model": args.model, "data": args.data, "reward": ",".join(keys), **summarize(groups, keys), **timings}
    out = args.out or os.path.join("evals", f"{os.path.basename(os.path.normpath(args.model))}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(out, exist_ok=True)
    atomic_write_text(os.path.join(out, "samples.jsonl"),
                      "".join(json.dumps({k: v for k, v in s.items() if k != "messages"}) + "\n" for g in groups for s in g))
    atomic_write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=1) + "\n")
    width = max(len(k) for k in summary)
    for k, v in summary.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(f"[rlvr] wrote {out}/summary.json and {out}/samples.jsonl")
    return 0


def cmd_sample(args) -> int:
    if not _verifiers_ok(args):
        return EXIT_USAGE
    if args.keep == "threshold" and args.threshold is None:
        print("rlvr sample: --keep threshold needs --threshold X", file=sys.stderr)
        return EXIT_USAGE
    rows = _rows_or_exit(args)
    if rows is None:
        return EXIT_USAGE
    groups, keys, timings = generate_and_score_model(args, rows)
    lines, kept_prompts = [], 0
    for group in groups:
        kept = keep_samples(group, args.keep, args.threshold or 0.0)
        kept_prompts += bool(kept)
        for s in kept:
            conversation = s["episode"]["messages"] if "episode" in s else \
                s["messages"] + [{"role": "assistant", "content": s["completion"]}]
            lines.append(json.dumps({"messages": conversation,
                                     "answer": s["reference"], "reward": s["reward"], "scores": s["scores"],
                                     "source_row": s["row"]}) + "\n")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    atomic_write_text(args.out, "".join(lines))
    summary = {"model": args.model, "data": args.data, "keep": args.keep, "prompts": len(groups),
               "prompts_kept": kept_prompts, "samples_kept": len(lines),
               "accuracy": summarize(groups, keys)["accuracy"], **timings}
    atomic_write_text(args.out + ".summary.json", json.dumps(summary, indent=1) + "\n")
    print(f"[rlvr] kept {len(lines)} samples; {kept_prompts} of {len(groups)} prompts kept at least one "
          f"({kept_prompts / max(len(groups), 1):.1%}) -> {args.out}")
    return 0


def _verifiers_ok(args) -> bool:
    from rlvr.config.checks import RecipeError
    from rlvr.eval.offline import eval_verifiers

    try:
        eval_verifiers(args)
        return True
    except RecipeError as e:
        print(f"rlvr {args.command}: {e}", file=sys.stderr)
        return False


def _rows_or_exit(args) -> list[dict] | None:
    from rlvr.config import DataConfig
    from rlvr.data.rows import DatasetError
    from rlvr.data.sources import source_rows

    try:
        rows = source_rows(args.data, DataConfig(), split=args.split)  # builtin:*: the held-out split by default
        return rows[: args.limit] if args.limit else rows
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
    p.add_argument("--split", choices=("eval", "train"), default="eval",
                   help="builtin:arithmetic / builtin:tool-arithmetic: which split (default: eval, the held-out one; "
                   "train: prompts to sample SFT rows from without touching the held-out ones)")
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
    p.add_argument("--verifiers", default=None, help="verifiers with options: a YAML list as a recipe's "
                   "reward.verifiers (or a file holding one), e.g. '[{name: reward_model, path: ./rm}]'; "
                   "replaces --reward")
    p.add_argument("--judge-model", default=None, help="start a judge vLLM engine on this model (a local Ray "
                   "cluster) and point the judge verifiers at it, as reward.judge does in a run")
    p.add_argument("--judge-max-tokens", type=int, default=64, help="a judge's answer at most (default 64)")
    g = p.add_argument_group("multi-turn episodes (as rollout.multi_turn in a recipe)")
    g.add_argument("--tools", default=None, help="tool names, comma-separated (registered or module:attr): "
                   "run multi-turn, tool-using episodes (pass@k over whole trajectories)")
    g.add_argument("--env", default="tools", help="the environment (default: tools)")
    g.add_argument("--max-turns", type=int, default=4, help="assistant turns per episode at most (default 4)")
    g.add_argument("--max-total-tokens", type=int, default=None, help="prompt + turns + observations (default 1024)")
    g.add_argument("--parser", default="hermes", choices=sorted(PARSERS), help="tool-call format (default hermes)")
    g.add_argument("--tool-timeout-s", type=float, default=10.0, help="hard kill per tool call (default 10)")


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
