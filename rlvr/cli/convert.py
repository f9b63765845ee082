"""`rlvr convert swift -- <swift rlhf args>` and `rlvr convert trl CONFIG.yaml`: print an rlvr recipe.

The recipe goes to stdout (YAML, headed by comments: the command, what to do before training,
the settings with no rlvr equivalent, and what each mapped setting became); the settings with no
equivalent and the steps to do first are also listed on stderr. The recipe is loaded once
(`rlvr.config.load_recipe`) before it is printed. A command that cannot be converted (not GRPO, a
value that is not a number): one line on stderr, exit code 2.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile

EXIT_USAGE = 2


def register(sub) -> None:
    p = sub.add_parser("convert", help="print an rlvr recipe for an ms-swift GRPO command or a TRL GRPOConfig YAML")
    conv_sub = p.add_subparsers(dest="convert_from", required=True)
    p = conv_sub.add_parser("swift", help="an ms-swift `swift rlhf --rlhf_type grpo ...` command (after --)")
    p.add_argument("--gpus", type=int, default=None, help="GPUs the run had (default: NPROC_PER_NODE, else 1)")
    p.add_argument("args", nargs=argparse_remainder(), help="the swift command line, after --")
    p.set_defaults(fn=cmd_convert)
    p = conv_sub.add_parser("trl", help="a TRL GRPO config YAML (GRPOConfig fields, model_name_or_path, ...)")
    p.add_argument("config", help="the YAML file")
    p.add_argument("--gpus", type=int, default=None, help="GPUs (accelerate processes) the run had (default: 1)")
    p.set_defaults(fn=cmd_convert)


def argparse_remainder():
    import argparse

    return argparse.REMAINDER


def cmd_convert(args) -> int:
    from rlvr.convert.build import to_yaml
    from rlvr.convert.grpo import ConvertError

    if args.gpus is not None and args.gpus < 1:
        print("rlvr convert: --gpus must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.convert_from == "swift":
            from rlvr.convert.swift import convert_swift

            argv = args.args[1:] if args.args[:1] == ["--"] else args.args
            conv, command = convert_swift(argv, args.gpus), shlex.join(argv)
        else:
            from rlvr.convert.trl import convert_trl

            conv, command = convert_trl(args.config, args.gpus), f"trl config {args.config}"
    except ConvertError as e:
        print(f"rlvr convert: {e}", file=sys.stderr)
        return EXIT_USAGE
    text = to_yaml(conv, command)
    problem = load_problem(text)
    if problem:
        print(f"rlvr convert: the converted recipe does not load: {problem}", file=sys.stderr)
        return EXIT_USAGE
    for flag, why in conv.unmapped:
        print(f"rlvr convert: not converted: {flag}: {why}", file=sys.stderr)
    for step in conv.todo:
        print(f"rlvr convert: before training: {step}", file=sys.stderr)
    print(text, end="")
    return 0


def load_problem(text: str) -> str | None:
    """Why the recipe does not load, or None; data files it names that `rlvr data prepare` has not
    written yet are stood in for by the built-in task."""
    from omegaconf import OmegaConf

    from rlvr.config import RecipeError, load_recipe

    overrides = []
    data = OmegaConf.create(text).get("data", {}) or {}
    if str(data.get("train_path", "")).startswith("data/") and not os.path.exists(data.get("train_path").split("#")[0]):
        overrides.append("data.train_path=builtin:arithmetic")
    if data.get("train_mix"):
        overrides.append("data.train_mix=[]")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        load_recipe(f.name, overrides)
    except RecipeError as e:
        return str(e)
    finally:
        os.remove(f.name)
    return None
