"""`rlvr data prepare NAME --from PATH|hf:ID[:config][:split] --out FILE.jsonl [--limit N]`.

Turns a public math dataset (or any, with `generic`) into rlvr's rows, one `{"prompt", "answer",
"dataset", "id"}` object per line (see `rlvr.data.prepare` for each dataset's fields). Rows whose
answer cannot be found are skipped and counted: one summary line on stdout. An input that cannot
be read, or a `generic` without its fields: one line on stderr, exit code 2.
"""

from __future__ import annotations

import sys

EXIT_USAGE = 2


def register(sub) -> None:
    from rlvr.data.prepare import DATASET_NAMES, EXTRACT, HUB_IDS

    p = sub.add_parser("data", help="prepare public datasets as rlvr rows (JSONL)")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    known = ", ".join(f"{k} ({v})" for k, v in HUB_IDS.items())
    p = data_sub.add_parser("prepare", help="write a dataset's rows as {prompt, answer} JSONL",
                            description=f"Datasets: {known}; generic: any, with --prompt-field/--answer-field.")
    p.add_argument("name", choices=DATASET_NAMES, help="the dataset's layout")
    p.add_argument("--from", dest="source", required=True, metavar="PATH|hf:ID",
                   help="a .jsonl/.json/.parquet file, a save_to_disk folder[:split], or hf:ID[:config][:split]")
    p.add_argument("--out", required=True, help="the JSONL file to write")
    p.add_argument("--limit", type=int, default=None, help="write at most N rows")
    p.add_argument("--prompt-field", default=None, help="generic: the prompt's field (dotted path for nested ones)")
    p.add_argument("--answer-field", default=None, help="generic: the answer's field (dotted path)")
    p.add_argument("--id-field", default=None, help="generic: the id's field (default: id, else the row index)")
    p.add_argument("--extract", choices=sorted(EXTRACT), default=None,
                   help="generic: take the answer out of a worked solution (last \\boxed{}, or after '#### ')")
    p.set_defaults(fn=cmd_prepare)


def cmd_prepare(args) -> int:
    from rlvr.data.prepare import PREPARERS, Tally, generic_preparer, prepare_rows
    from rlvr.data.prepare_io import PrepareError, read_records, write_jsonl

    if args.name == "generic":
        if not (args.prompt_field and args.answer_field):
            print("rlvr data prepare: generic needs --prompt-field and --answer-field", file=sys.stderr)
            return EXIT_USAGE
        preparer = generic_preparer(args.prompt_field, args.answer_field, args.extract, args.id_field)
    else:
        extra = [f for f in ("prompt_field", "answer_field", "id_field", "extract") if getattr(args, f)]
        if extra:
            print(f"rlvr data prepare: --{extra[0].replace('_', '-')} is for `generic` only", file=sys.stderr)
            return EXIT_USAGE
        preparer = PREPARERS[args.name]
    if args.limit is not None and args.limit < 1:
        print("rlvr data prepare: --limit must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    tally = Tally()
    try:
        write_jsonl(prepare_rows(preparer, read_records(args.source), tally, args.limit), args.out)
    except (PrepareError, OSError) as e:
        print(f"rlvr data prepare: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"[rlvr] {args.name}: {tally.summary()} -> {args.out}")
    if tally.written == 0:
        print("rlvr data prepare: no rows written (is NAME the dataset's layout?)", file=sys.stderr)
        return EXIT_USAGE
    return 0
