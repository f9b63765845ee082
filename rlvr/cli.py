"""`rlvr` command line: train, validate.

Recipe problems exit with code 2 and one line naming the dotted key, before
Ray, vLLM or torch are imported.
"""

from __future__ import annotations

import argparse
import sys

from rlvr.config import RecipeError, load_recipe, to_yaml

EXIT_RECIPE_ERROR = 2


def _load(args) -> object:
    try:
        return load_recipe(args.recipe, args.overrides)
    except RecipeError as e:
        print(f"rlvr: recipe error: {e}", file=sys.stderr)
        sys.exit(EXIT_RECIPE_ERROR)


def cmd_validate(args) -> int:
    cfg = _load(args)
    print(to_yaml(cfg), end="")
    return 0


def cmd_train(args) -> int:
    cfg = _load(args)
    from rlvr.driver import RewardFailureError, train

    try:
        summary = train(cfg)
    except RewardFailureError as e:
        print(f"rlvr: run stopped: {e}", file=sys.stderr)
        return 1
    history = summary["history"]
    evals = [m["eval/accuracy"] for m in history if m.get("eval/accuracy") is not None]
    start = summary["first_eval"].get("eval/accuracy")
    if start is not None and evals:
        print(f"[rlvr] eval/accuracy: step 0 {start:.3f} -> final {evals[-1]:.3f} ({(evals[-1] - start) * 100:+.1f} points)")
    print(f"[rlvr] metrics: {summary['run_dir']}/metrics.jsonl")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlvr", description="RL with verifiable rewards on Ray + vLLM")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn, text in (("train", cmd_train, "train a model with a recipe"),
                           ("validate", cmd_validate, "print the fully resolved recipe, or its errors")):
        p = sub.add_parser(name, help=text)
        p.add_argument("recipe", help="recipe YAML file")
        p.add_argument("overrides", nargs="*", help="dotted.key=value overrides (omegaconf dotlist)")
        p.set_defaults(fn=fn)
    from rlvr import rewards_cli

    rewards_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
