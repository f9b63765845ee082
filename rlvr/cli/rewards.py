"""`rlvr rewards ...`: list, check, try and scaffold verifiers from the command line.

    rlvr rewards list [NAME ...]            installed verifiers (entry-point group rlvr.rewards): name,
                                            target, package, kind (plain/batched/async), options
    rlvr rewards check NAME [--samples FILE.jsonl] [-o k=v ...]
                                            run the conformance kit, print a PASS/FAIL/SKIP table;
                                            exit 1 on any FAIL
    rlvr rewards score NAME (--completion TEXT | --completion-file PATH|-) [--answer TEXT |
                            --answer-file PATH|-] [--prompt TEXT] [--metadata JSON] [-o k=v ...]
                                            score one sample, print {"value", "parts", "failure"} as JSON;
                                            exit 1 when the verifier failed (raised, timed out, invalid)
    rlvr rewards score NAME --samples FILE.jsonl
                                            score every row, one JSON line each (with its "line")
    rlvr rewards new NAME [--dir DIR]       scaffold a plugin package that passes `check` as made

NAME is a registered name or a "package.module:attr" path (a mistyped name gets a
suggestion). A samples file is JSONL (`rlvr.reward.samples` documents its fields). Option values are
parsed as YAML (`k=3` is an int, `k=true` a bool, `k={a: b}` a mapping, quotes
force a string). `score` and `check` run the verifier in a reward-worker child
process, as training does, with the same hard timeout (a hang is killed).
Also runnable as `python -m rlvr.cli.rewards ...`.
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_FAILED = 1
EXIT_USAGE = 2


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `rewards` command (and its sub-commands) to an argparse subparsers object."""
    parser = subparsers.add_parser("rewards", help="list, check, try and scaffold reward verifiers",
                                   description=__doc__.split("\n\n")[1] if __doc__ else None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="rewards_command", required=True)

    p = sub.add_parser("list", help="installed verifiers: name, target, package, kind, options")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these (default: all)")
    p.set_defaults(fn=_usage_errors(cmd_list))

    p = sub.add_parser("check", help="run the verifier contract checks; exit 1 if any fails")
    p.add_argument("name", help="registered name or package.module:attr")
    p.add_argument("--samples", metavar="FILE.jsonl", help="samples to check with: completion, answer, prompt, "
                   "metadata, and optional expect / expect_min / expect_max (see rlvr.reward.samples)")
    _add_option_arg(p)
    p.add_argument("--timeout-s", type=float, default=5.0, help="hard kill per call (default 5)")
    p.add_argument("--max-ms", type=float, default=100.0, help="latency limit, median ms per sample (default 100)")
    p.add_argument("--timing-samples", type=int, default=20, help="calls timed for the latency check (default 20)")
    p.set_defaults(fn=_usage_errors(cmd_check))

    p = sub.add_parser("score", help="score a sample (or a samples file) and print JSON")
    p.add_argument("name", help="registered name or package.module:attr")
    p.add_argument("--completion", help="the completion text")
    p.add_argument("--completion-file", metavar="PATH", help="read the completion from a file ('-': stdin)")
    p.add_argument("--answer", help="the reference answer (default empty)")
    p.add_argument("--answer-file", metavar="PATH", help="read the answer from a file ('-': stdin)")
    p.add_argument("--prompt", default="", help="the prompt (in training: the chat-templated text)")
    p.add_argument("--metadata", default="{}", metavar="JSON", help="the sample's metadata, a JSON object")
    p.add_argument("--samples", metavar="FILE.jsonl", help="score every row of a samples file, one JSON line each")
    _add_option_arg(p)
    p.add_argument("--timeout-s", type=float, default=5.0, help="hard kill (default 5)")
    p.set_defaults(fn=_usage_errors(cmd_score))

    p = sub.add_parser("new", help="scaffold a verifier plugin package that passes `check` as made")
    p.add_argument("name", help="the verifier's name (lower_case_with_underscores)")
    p.add_argument("--dir", default=".", help="where to make the package folder rlvr-NAME (default .)")
    p.set_defaults(fn=_usage_errors(cmd_new))
    return parser


def _usage_errors(fn):
    """`fn(args)`, with a ValueError (a malformed -o KEY=VALUE, a bad samples file or input, a
    bad `new` name) printed as one line and exit code 2, under `rlvr rewards` and `python -m`."""
    def run(args) -> int:
        try:
            return fn(args)
        except ValueError as e:
            print(f"rlvr rewards: {e}", file=sys.stderr)
            return EXIT_USAGE
    return run


def _add_option_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="verifier option (repeatable); VALUE is parsed as YAML")


def parse_options(items: list[str]) -> dict:
    """["k=3", "pattern=[0-9]+"] -> {"k": 3, "pattern": "[0-9]+"} (values parsed as YAML).

    >>> parse_options(["max_length=3", "unit=words", "strict=true", "ratio=0.5", "name='3'"])
    {'max_length': 3, 'unit': 'words', 'strict': True, 'ratio': 0.5, 'name': '3'}
    >>> parse_options(["pattern=[0-9]+"])  # not valid YAML: kept as the string
    {'pattern': '[0-9]+'}
    """
    import yaml

    options = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"option {item!r} is not KEY=VALUE")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        if isinstance(value, list):  # "[0-9]+"-like text that YAML reads as a list: keep the text
            value = text
        options[key.strip()] = value
    return options


def cmd_list(args) -> int:
    from rlvr.plugins import known_verifiers, unknown_message
    from rlvr.reward.catalog import describe, format_list, installed

    rows = installed()
    unknown = [n for n in args.names if n not in {r[0] for r in rows}]
    if unknown:
        print(f"rlvr rewards: {unknown_message(unknown[0], known_verifiers(), 'verifier')}", file=sys.stderr)
        return EXIT_USAGE
    rows = [r for r in rows if not args.names or r[0] in args.names]
    if not rows:
        print("no verifiers installed (entry-point group rlvr.rewards)")
        return 0
    print(format_list([describe(*r) for r in rows]))
    return 0


def _resolve(name: str) -> str | None:
    """None when `name` is a registered verifier or a well-formed path; else the error line."""
    from rlvr.plugins import resolve_verifier_name

    try:
        resolve_verifier_name(name)
    except LookupError as e:
        return str(e)
    return None


def cmd_check(args) -> int:
    from rlvr.reward.conformance import check_verifier, format_table
    from rlvr.reward.samples import read_samples

    error = _resolve(args.name)
    if error:
        print(f"rlvr rewards: {error}", file=sys.stderr)
        return EXIT_USAGE
    samples = read_samples(args.samples) if args.samples else None  # SamplesError: a usage error (main)
    results = check_verifier(args.name, parse_options(args.option), samples=samples, timeout_s=args.timeout_s,
                             n_timing=args.timing_samples, max_ms=args.max_ms)
    print(f"verifier {args.name}" + (f", samples {args.samples} ({len(samples)})" if samples else ""))
    print(format_table(results))
    if any(r.status == "SKIP" and "--samples" in r.detail for r in results):
        print("some checks need samples of this verifier's domain: --samples FILE.jsonl "
              "(`rlvr rewards new` writes an example)")
    return EXIT_FAILED if any(r.failed for r in results) else 0


def _read_text(path: str | None, text: str | None, what: str) -> str | None:
    """The text of `--what` or `--what-file` (`-`: stdin); both given is an error."""
    if path is None:
        return text
    if text is not None:
        raise ValueError(f"give --{what} or --{what}-file, not both")
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--{what}-file {path}: {e}") from None


def _score_inputs(args) -> tuple[list, list[int]]:
    """The samples `score` scores (and their lines in --samples; 0 for one sample)."""
    from rlvr.reward.samples import read_samples
    from rlvr.types import RewardInput

    if args.samples:
        if args.completion is not None or args.completion_file or args.answer is not None or args.answer_file:
            raise ValueError("--samples replaces --completion / --answer (and their -file forms)")
        rows = read_samples(args.samples)
        return [r.sample for r in rows], [r.line for r in rows]
    if args.completion_file == "-" and args.answer_file == "-":
        raise ValueError("only one of --completion-file and --answer-file can be '-' (stdin)")
    completion = _read_text(args.completion_file, args.completion, "completion")
    if completion is None:
        raise ValueError("give --completion TEXT, --completion-file PATH (or -), or --samples FILE.jsonl")
    answer = _read_text(args.answer_file, args.answer, "answer") or ""
    try:
        metadata = json.loads(args.metadata)
    except json.JSONDecodeError as e:
        raise ValueError(f"--metadata is not JSON: {e}") from None
    if not isinstance(metadata, dict):
        raise ValueError("--metadata must be a JSON object")
    return [RewardInput(prompt=args.prompt, completion=completion, answer=answer, metadata=metadata)], [0]


def cmd_score(args) -> int:
    from rlvr.reward.worker import RewardWorker

    inputs, lines = _score_inputs(args)
    error = _resolve(args.name)  # a clean one-line error before any process starts
    if error:
        print(f"rlvr rewards: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        worker = RewardWorker([{"name": args.name, **parse_options(args.option)}], default_timeout_s=args.timeout_s)
    except (LookupError, RuntimeError) as e:  # the verifier could not load with these options
        print(f"rlvr rewards: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        rewards = worker.score(inputs)
    finally:
        worker.shutdown()
    [key] = worker.keys
    for reward, line in zip(rewards, lines):
        out = {"value": reward.scores[key], "parts": reward.parts.get(key, {}), "failure": reward.failures.get(key)}
        print(json.dumps({"line": line, **out} if args.samples else out))
    return EXIT_FAILED if any(key in r.failures for r in rewards) else 0


def cmd_new(args) -> int:
    from rlvr.reward.scaffold import class_name, new_package

    root = new_package(args.name, args.dir)
    target = f"rlvr_{args.name}:{class_name(args.name)}"
    print(f"made {root}/: verifier {args.name} = {target}; edit it and its samples.jsonl")
    print(f"  check it:    PYTHONPATH={root} rlvr rewards check {target} --samples {root}/samples.jsonl")
    print(f"  install it:  pip install -e {root}   (then: rlvr rewards check {args.name} --samples ...)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m rlvr.cli.rewards list|check|score|new ...` (the same as `rlvr rewards ...`)."""
    parser = argparse.ArgumentParser(prog="rlvr")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["rewards", *(sys.argv[1:] if argv is None else argv)])
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
