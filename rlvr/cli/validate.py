"""`rlvr validate RECIPE [overrides]`: everything `rlvr train` checks before it starts an actor,
in seconds, with nothing started.

1. The recipe: types, values, cross-section rules (`rlvr.config`).
2. The plugins' options: every verifier (and multi-turn tool and environment) built once in a
   short-lived child process (`rlvr.cluster.plugin_check`).
3. The data: every source streamed through the loader's checks (`rlvr.data.scan`), at most
   `--scan-mb` MiB of each file (64 by default; 0 skips the data).

Any problem: exit code 2, `rlvr: recipe error: <key>: ...` or `rlvr: data error: <file>:<line>:
...` lines on stderr (one per bad line, the first five of each file). Else the resolved recipe
on stdout, and one line per data source (rows, rows dropped as too long) on stderr.
"""

from __future__ import annotations

import sys

EXIT_RECIPE_ERROR = 2


def register(sub, load) -> None:
    """Add `validate` to the subcommands; `load(args)` reads the recipe (exit 2 on errors)."""
    from rlvr.data.scan import SCAN_BYTES

    p = sub.add_parser("validate", help="check a recipe, its plugins' options and its data; print the resolved recipe")
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides (omegaconf dotlist)")
    p.add_argument("--scan-mb", type=float, default=SCAN_BYTES / 2**20,
                   help=f"read at most this many MiB of each data file (default: {SCAN_BYTES >> 20}; 0: no data)")
    p.add_argument("--smoke", action="store_true", help="validate what `rlvr train RECIPE --smoke` would run")
    p.set_defaults(fn=lambda args: cmd_validate(args, load))


def cmd_validate(args, load) -> int:
    from rlvr.cluster.plugin_check import check_plugin_options
    from rlvr.config import RecipeError, to_yaml

    cfg = load(args)
    try:
        check_plugin_options(cfg)
    except RecipeError as e:
        print(f"rlvr: recipe error: {e}", file=sys.stderr)
        return EXIT_RECIPE_ERROR
    if args.scan_mb > 0 and not report_data(cfg, int(args.scan_mb * 2**20)):
        return EXIT_RECIPE_ERROR
    print(to_yaml(cfg), end="")
    return 0


def report_data(cfg, max_bytes: int) -> bool:
    """Scan every data source; print its problems (False) or its summary (True) on stderr."""
    from rlvr.data.scan import scan_data

    scans = scan_data(cfg, max_bytes)
    problems = [line for scan in scans for line in scan.problems()]
    for line in problems:
        print(f"rlvr: data error: {line}", file=sys.stderr)
    if not problems:
        for scan in scans:
            print(f"[rlvr] {scan.summary()}", file=sys.stderr)
    return not problems
