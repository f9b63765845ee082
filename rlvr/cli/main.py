"""`rlvr` command line: train, sft, validate, rewards, eval, sample, plot, export, doctor, serve, status, data, convert.

Recipe problems exit with code 2 and one line naming the dotted key, before
Ray, vLLM or torch are imported. `serve` imports fastapi/uvicorn only when it
runs; `status` is a plain urllib client of the service's JSON API (or, with
`--runs-dir`, reads the run folders itself through rlvr.run.status).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from rlvr.config import RecipeError, load_recipe

EXIT_RECIPE_ERROR = 2
DEFAULT_URL = "http://127.0.0.1:8777"
SMOKE_HELP = ("the recipe shrunk to run here on CPUs in about a minute (rlvr.config.smoke): its structure kept, "
              "the model replaced by the tiny random model of its family, 2 steps, a few rows of data")
KEY_METRICS = ("reward/mean", "eval/accuracy", "eval/loss", "loss", "kl", "grad_norm", "response_length/mean")


def _load(args) -> object:
    try:
        if getattr(args, "smoke", False):
            from rlvr.config.smoke import load_smoke

            cfg, lines = load_smoke(args.recipe, args.overrides)
            for line in lines:
                print(line, file=sys.stderr, flush=True)
            return cfg
        return load_recipe(args.recipe, args.overrides)
    except RecipeError as e:
        print(f"rlvr: recipe error: {e}", file=sys.stderr)
        sys.exit(EXIT_RECIPE_ERROR)


def cmd_train(args) -> int:
    from rlvr.loop.train import train

    summary = _run_command(train, args)
    if isinstance(summary, int):
        return summary
    history = summary["history"]
    evals = [m["eval/accuracy"] for m in history if m.get("eval/accuracy") is not None]
    start = summary["first_eval"].get("eval/accuracy")
    if start is not None and evals:
        print(f"[rlvr] eval/accuracy: step 0 {start:.3f} -> final {evals[-1]:.3f} ({(evals[-1] - start) * 100:+.1f} points)")
    print(f"[rlvr] metrics: {summary['run_dir']}/metrics.jsonl")
    return 0


def cmd_sft(args) -> int:
    from rlvr.loop.sft import sft

    summary = _run_command(sft, args)
    if isinstance(summary, int):
        return summary
    losses = [m["eval/loss"] for m in summary["history"] if m.get("eval/loss") is not None]
    start = summary["first_eval"].get("eval/loss")
    if start is not None and losses:
        print(f"[rlvr] eval/loss: step 0 {start:.4f} -> final {losses[-1]:.4f}")
    print(f"[rlvr] metrics: {summary['run_dir']}/metrics.jsonl")
    if summary["model"]:
        print(f"[rlvr] the fine-tuned model: {summary['model']} (rlvr train RECIPE model.path={summary['model']})")
    return 0


def _run_command(fn, args) -> dict | int:
    """`fn(cfg)` (`train` or `sft`) of the recipe in `args`: its summary, or the exit code after one
    line that says what went wrong (recipe, data, cluster, service, a stop signal, a failed run)."""
    if args.verbose:
        args.overrides = [*args.overrides, "logging.verbose=true"]
    cfg = _load(args)
    from rlvr.cluster.fit import ClusterFitError
    from rlvr.data.rows import DatasetError
    from rlvr.loop.control import StopRequested
    from rlvr.reward.group import RewardFailureError
    from rlvr.service.access import ServiceRefused

    try:
        return fn(cfg)
    except ServiceRefused as e:
        print(f"rlvr: service error: {e}", file=sys.stderr)
        return EXIT_RECIPE_ERROR
    except DatasetError as e:
        print(f"rlvr: data error: {e}", file=sys.stderr)
        return EXIT_RECIPE_ERROR
    except ClusterFitError as e:
        print(f"rlvr: {e}", file=sys.stderr)
        return EXIT_RECIPE_ERROR
    except StopRequested as e:
        print(f"rlvr: {e}", file=sys.stderr)
        return 128 + e.signum
    except RecipeError as e:  # a plugin option, found by building the plugins before any actor starts
        print(f"rlvr: recipe error: {e}", file=sys.stderr)
        return EXIT_RECIPE_ERROR
    except RewardFailureError as e:
        print(f"rlvr: run stopped: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # a remote call failed or hung, an engine lost its weights: one clear line
        from rlvr.cluster.remote import RemoteCallError
        from rlvr.sync.tensors import WeightSyncError

        if not isinstance(e, (RemoteCallError, WeightSyncError)):
            raise
        print(f"rlvr: run failed: {type(e).__name__}: {e}\n(checkpoints are kept: rerun the same command "
              "with checkpoint.resume=auto to continue)", file=sys.stderr)
        return 1


def cmd_serve(args) -> int:
    from rlvr.service.access import ServiceRefused
    from rlvr.service.server import resolve_token, serve_forever

    try:
        token = resolve_token(args.token_env, args.token_file)
    except OSError as e:
        print(f"rlvr serve: cannot read the token file: {e}", file=sys.stderr)
        return EXIT_RECIPE_ERROR
    control = "control on" if token else f"control off: set {args.token_env} or --token-file to enable it"

    def ready(url: str) -> None:
        print(f"[rlvr] serving the runs in {os.path.abspath(args.runs_dir)} at {url} ({control})", flush=True)

    try:
        serve_forever(args.runs_dir, args.host, args.port, token, on_ready=ready, public_read=args.public_read,
                      allowed_hosts=args.allowed_host)
    except ServiceRefused as e:
        print(f"rlvr serve: {e}", file=sys.stderr)
        return EXIT_RECIPE_ERROR
    except OSError as e:
        print(f"rlvr serve: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    return 0


def format_age(seconds: float | None) -> str:
    """A heartbeat age for humans.

    >>> format_age(None), format_age(4.2), format_age(600), format_age(7200)
    ('-', '4 s ago', '10 min ago', '2.0 h ago')
    """
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def format_table(header: list[str], rows: list[list]) -> str:
    """Left-aligned columns.

    >>> print(format_table(["RUN", "STATE"], [["a", "running"], ["long-name", None]]))
    RUN        STATE
    a          running
    long-name  -
    """
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_run(d: dict) -> str:
    """The `rlvr status RUN` text for one run's status dict (as the API returns it)."""
    state = d["state"] if d.get("reported_state") in (None, d["state"]) else f"{d['state']} (file says {d['reported_state']})"
    lines = [("run", f"{d['run']}  [{state}]"),
             ("step", f"{d.get('step', '-')} / {d.get('total_steps') or '?'}"),
             ("phase", d.get("phase") or "-"),
             ("heartbeat", format_age(d.get("heartbeat_age")))]
    if d.get("weight_version") is not None:
        lines.append(("weights", f"version {d['weight_version']}"))
    if d.get("ray_job_id"):
        lines.append(("ray job", d["ray_job_id"]))
    timings = d.get("last_step_timings") or {}
    if timings:
        lines.append(("timings", "  ".join(f"{k.removeprefix('timing/')} {v:.2f}s" for k, v in timings.items()
                                           if isinstance(v, (int, float)))))
    latest = d.get("latest_metrics") or {}
    shown = [f"{k} {_number(latest[k])}" for k in KEY_METRICS if latest.get(k) is not None]
    if shown:
        lines.append(("metrics", "  ".join(shown)))
    failures = {k: v for k, v in (d.get("reward_failures") or {}).items() if v}
    lines.append(("failures", "  ".join(f"{k} {v}" for k, v in sorted(failures.items())) or "none"))
    lines.append(("checkpoints", ", ".join(d.get("checkpoints") or []) or "none"))
    if d.get("error"):
        lines.append(("error", d["error"]))
    return "\n".join(f"{k:<12} {v}" for k, v in lines)


def _status_from_files(args) -> tuple[list[dict] | None, dict | None, str | None]:
    from rlvr.run import status

    if args.run is None:
        return status.list_runs(args.runs_dir), None, None
    try:
        return None, status.read_status(status.resolve_run(args.runs_dir, args.run)), None
    except status.RunNotFound:
        return None, None, f"no run named {args.run!r} in {os.path.abspath(args.runs_dir)}"


def _status_from_service(args) -> tuple[list[dict] | None, dict | None, str | None]:
    import urllib.error
    import urllib.parse
    import urllib.request

    base = args.url.rstrip("/")
    path = "/api/v1/runs" + ("" if args.run is None else "/" + urllib.parse.quote(args.run, safe=""))
    token = os.environ.get("RLVR_TOKEN", "").strip()  # a non-loopback service needs it for reads too
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None, None, f"no run named {args.run!r} at {base}"
        hint = " (this server needs the token for reads: set RLVR_TOKEN)" if e.code == 401 else ""
        return None, None, f"{base}{path} answered HTTP {e.code}{hint}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return None, None, (f"cannot reach the rlvr service at {base} ({reason}); start one with "
                            f"`rlvr serve --runs-dir runs`, or read the files with `rlvr status --runs-dir runs`")
    return (body["runs"], None, None) if args.run is None else (None, body, None)


def cmd_status(args) -> int:
    runs, detail, error = (_status_from_files if args.runs_dir else _status_from_service)(args)
    if error:
        print(f"rlvr status: {error}", file=sys.stderr)
        return 1
    if detail is not None:
        print(format_run(detail))
    elif not runs:
        print("no runs yet")
    else:
        print(format_table(["RUN", "STATE", "STEP", "PHASE", "HEARTBEAT"],
                           [[r["run"], r["state"], f"{r.get('step') if r.get('step') is not None else '-'}"
                             f"/{r.get('total_steps') or '?'}", r.get("phase"), format_age(r.get("heartbeat_age"))]
                            for r in runs]))
    return 0


def cmd_plot(args) -> int:
    from rlvr.run.plots import plot_run

    if not os.path.isfile(os.path.join(args.run, "metrics.jsonl")):
        print(f"rlvr plot: {args.run}: no metrics.jsonl (expected a run folder, e.g. runs/tiny-cpu)", file=sys.stderr)
        return EXIT_RECIPE_ERROR
    try:
        paths = plot_run(args.run, args.out)
    except ValueError as e:
        print(f"rlvr plot: {e}", file=sys.stderr)
        return EXIT_RECIPE_ERROR
    for path in paths:
        print(path)
    return 0


def _add_service_commands(sub) -> None:
    p = sub.add_parser("serve", help="serve the status API and dashboard of every run in a folder")
    p.add_argument("--runs-dir", default="runs", help="the runs folder (run.output_dir; default: runs)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8777, help="port (default: 8777; 0: any free port)")
    p.add_argument("--token-env", default="RLVR_TOKEN", help="env variable with the control token")
    p.add_argument("--token-file", default=None, help="file with the control token (wins over --token-env)")
    p.add_argument("--public-read", action="store_true",
                   help="on a non-loopback --host, let anyone read (default: reads need the token too)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host-header name to answer besides the bound host and localhost (repeatable; '*': any)")
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("status", help="show runs, or one run, from a running `rlvr serve` (or the files)")
    p.add_argument("run", nargs="?", default=None, help="a run name (default: list every run)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"the service (default: {DEFAULT_URL}; one on a "
                   "non-loopback address needs the token: set RLVR_TOKEN)")
    p.add_argument("--runs-dir", default=None, help="read this runs folder directly instead of asking a service")
    p.set_defaults(fn=cmd_status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlvr", description="RL with verifiable rewards on Ray + vLLM")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model with a recipe")
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides (omegaconf dotlist)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="engine, trainer and Ray output on the console too (logging.verbose=true)")
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("sft", help="supervised fine-tuning on {\"messages\": [...]} rows (the recipe's sft section)")
    p.add_argument("recipe", help="recipe YAML file (model, trainer, run, checkpoint ... as for train; plus sft)")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. sft.train_path=kept.jsonl")
    p.add_argument("-v", "--verbose", action="store_true", help="trainer and Ray output on the console too")
    p.set_defaults(fn=cmd_sft)
    from rlvr.cli import convert, data, doctor, evaluate, export, rewards, validate

    validate.register(sub, _load)
    rewards.register(sub)
    evaluate.register(sub)
    doctor.register(sub)
    p = sub.add_parser("plot", help="write PNG charts of a run (reward, accuracy, KL, length, timings)")
    p.add_argument("run", help="the run folder (run.output_dir/run.name)")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: RUN/plots)")
    p.set_defaults(fn=cmd_plot)
    export.register(sub)
    _add_service_commands(sub)
    data.register(sub)
    convert.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `rlvr train R --smoke a=b`: argparse ends the overrides at the flag; the rest come back here
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
