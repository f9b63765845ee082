"""A separate virtualenv for TRL (`.venv-trl/` at the repo root) so TRL's dependency
pins never touch the project's `.venv`. Used by bench/compare_trl.py to run
bench/trl_grpo.py.

    python -m bench.trl_env          # any Python 3.11; prints the venv's python

Creates the venv when it is missing or its stamp is stale (the stamp, inside the venv,
holds the pinned requirements and the Python version; change a pin and the venv is
rebuilt from scratch). Quiet when it is already up to date.

What it installs: torch==2.13.0 (pip here has a local find-links folder with the
2.13.0+cpu wheel; an unpinned torch could pull a multi-GB CUDA build), trl==1.16.0,
math-verify==0.9.0, psutil, and whatever transformers/accelerate/datasets TRL's
resolver picks. CUDA builds of torchvision/torchaudio/torchcodec, if the resolver
pulls them in, are uninstalled: they break `import transformers` model code
(`operator torchvision::nms does not exist`) and text-only GRPO does not need them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-trl"
STAMP = VENV / "rlvr-trl-stamp.json"
REQUIREMENTS = ["torch==2.13.0", "trl==1.16.0", "math-verify==0.9.0", "psutil"]
# pulled in by some resolvers as CUDA builds; they break transformers' model imports
UNWANTED = ["torchvision", "torchaudio", "torchcodec"]
# run in the new venv as a last check: imports work and torch is the CPU build
_CHECK = ("import torch, transformers, trl, math_verify, psutil, json; "
          "print(json.dumps({'torch': torch.__version__, 'transformers': transformers.__version__, "
          "'trl': trl.__version__, 'cuda': torch.version.cuda}))")


def venv_python() -> Path:
    return VENV / "bin" / "python"


def _wanted_stamp() -> dict:
    return {"requirements": REQUIREMENTS, "unwanted": UNWANTED,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}"}


def _stamp_ok() -> bool:
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return False
    stamp.pop("installed", None)
    return venv_python().exists() and stamp == _wanted_stamp()


def _run(cmd: list[str]) -> str:
    print("[trl_env] $", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-8000:], file=sys.stderr)
        raise RuntimeError(f"[trl_env] command failed ({proc.returncode}): {' '.join(cmd)}")
    return proc.stdout


def ensure_trl_venv() -> str:
    """Create (or rebuild) `.venv-trl` if missing or stale; return its python's path."""
    if _stamp_ok():
        return str(venv_python())
    if VENV.exists():
        print(f"[trl_env] {VENV} is missing its stamp or its pins changed: rebuilding it", flush=True)
        shutil.rmtree(VENV)
    print(f"[trl_env] creating {VENV} (torch CPU + TRL; takes a few minutes)", flush=True)
    _run([sys.executable, "-m", "venv", str(VENV)])
    py = str(venv_python())
    _run([py, "-m", "pip", "install", "--quiet", *REQUIREMENTS])
    present = [name for name in UNWANTED
               if subprocess.run([py, "-m", "pip", "show", "--quiet", name], capture_output=True).returncode == 0]
    if present:
        print(f"[trl_env] removing {present} (CUDA builds pulled in by the resolver; they break transformers)")
        _run([py, "-m", "pip", "uninstall", "--yes", *present])
    installed = json.loads(_run([py, "-c", _CHECK]).strip().splitlines()[-1])
    if installed["cuda"] is not None or not installed["torch"].startswith("2.13.0"):
        raise RuntimeError(f"[trl_env] expected the torch 2.13.0 CPU build, got {installed}")
    STAMP.write_text(json.dumps({**_wanted_stamp(), "installed": installed}, indent=1))
    print(f"[trl_env] ready: {installed}", flush=True)
    return py


def main() -> None:
    print(ensure_trl_venv())


if __name__ == "__main__":
    main()
