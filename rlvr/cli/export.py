"""`rlvr export CHECKPOINT OUT [--merge] [--base PATH]`: see `rlvr.models.export`.

Every problem is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from rlvr.models import export as export_module
from rlvr.models.export import ExportError, export

EXIT_USAGE = 2


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `export` command to an argparse subparsers object."""
    p = subparsers.add_parser("export", help="write a checkpoint as a standalone model or adapter folder",
                              description=export_module.__doc__.split("\n\n")[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint folder (runs/<run>/checkpoints/final or step_N)")
    p.add_argument("out", help="the folder to write (must not exist)")
    p.add_argument("--merge", action="store_true", help="LoRA: merge the adapter into its base model")
    p.add_argument("--base", default=None, help="LoRA --merge: the base model (default: the one the adapter records)")
    p.set_defaults(fn=cmd_export)
    return p


def cmd_export(args) -> int:
    try:
        out = export(args.checkpoint, args.out, merge=args.merge, base=args.base)
    except ExportError as e:
        print(f"rlvr export: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"[rlvr] exported {args.checkpoint} -> {out}")
    return 0
