"""`rlvr rewards ...`: list, check and try verifiers from the command line.

    rlvr rewards list                       every verifier installed (entry-point group rlvr.rewards)
    rlvr rewards check NAME [-o k=v ...]    run the conformance kit, print a table; exit 1 on any FAIL
    rlvr rewards score NAME --completion TEXT --answer TEXT [--prompt TEXT] [-o k=v ...] [--timeout-s S]
                                            score one sample, print {"value", "parts", "failure"} as JSON;
                                            exit 1 when the verifier failed (raised, timed out, invalid)

NAME is a registered name or a "package.module:attr" path. Option values are
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
    parser = subparsers.add_parser("rewards", help="list, check and try reward verifiers",
                                   description=__doc__.split("\n\n")[1] if __doc__ else None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="rewards_command", required=True)

    p = sub.add_parser("list", help="every installed verifier: name, target, package")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("check", help="run the verifier contract checks; exit 1 if any fails")
    p.add_argument("name", help="registered name or package.module:attr")
    _add_option_arg(p)
    p.add_argument("--timeout-s", type=float, default=5.0, help="hard kill per sample (default 5)")
    p.add_argument("--max-ms", type=float, default=100.0, help="latency limit, median ms per sample (default 100)")
    p.add_argument("--samples", type=int, default=20, help="samples timed for the latency check (default 20)")
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("score", help="score one sample and print JSON")
    p.add_argument("name", help="registered name or package.module:attr")
    p.add_argument("--completion", required=True)
    p.add_argument("--answer", required=True)
    p.add_argument("--prompt", default="")
    _add_option_arg(p)
    p.add_argument("--timeout-s", type=float, default=5.0, help="hard kill (default 5)")
    p.set_defaults(fn=cmd_score)
    return parser


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
    from importlib.metadata import entry_points

    from rlvr.plugins import REWARDS as GROUP

    rows = sorted({(ep.name, ep.value, ep.dist.name if ep.dist else "?", ep.dist.version if ep.dist else "?")
                   for ep in entry_points(group=GROUP)})
    if not rows:
        print(f"no verifiers installed (entry-point group {GROUP})")
        return 0
    header = ("name", "target", "package")
    table = [header] + [(name, target, f"{dist} {version}") for name, target, dist, version in rows]
    widths = [max(len(r[i]) for r in table) for i in range(2)]
    for r in table:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}")
    return 0


def cmd_check(args) -> int:
    from rlvr.reward.conformance import check_verifier, format_table

    results = check_verifier(args.name, parse_options(args.option), timeout_s=args.timeout_s,
                             n_timing=args.samples, max_ms=args.max_ms)
    print(f"verifier {args.name}")
    print(format_table(results))
    return 0 if all(r.passed for r in results) else EXIT_FAILED


def cmd_score(args) -> int:
    from rlvr.reward.worker import RewardWorker
    from rlvr.plugins import resolve_verifier_name
    from rlvr.types import RewardInput

    try:
        resolve_verifier_name(args.name)  # a clean one-line error before any process starts
        worker = RewardWorker([{"name": args.name, **parse_options(args.option)}], default_timeout_s=args.timeout_s)
    except (LookupError, RuntimeError) as e:  # bad name, or the verifier could not load with these options
        print(f"rlvr rewards: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        [reward] = worker.score([RewardInput(prompt=args.prompt, completion=args.completion, answer=args.answer)])
    finally:
        worker.shutdown()
    [key] = worker.keys
    failure = reward.failures.get(key)
    print(json.dumps({"value": reward.scores[key], "parts": reward.parts.get(key, {}), "failure": failure}))
    return EXIT_FAILED if failure else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m rlvr.cli.rewards list|check|score ...` (the same as `rlvr rewards ...`)."""
    parser = argparse.ArgumentParser(prog="rlvr")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["rewards", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.fn(args)
    except ValueError as e:  # a malformed -o KEY=VALUE
        print(f"rlvr rewards: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
