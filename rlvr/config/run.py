"""Recipe sections about the run itself: its name and seed (`run`), its checkpoints
(`checkpoint`), the status service that watches it (`service`) and where its metrics go
(`logging`)."""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from typing import List, Literal, Optional

from rlvr.config.checks import require

Sink = Literal["tensorboard", "wandb", "mlflow"]  # the keys of rlvr.run.sinks.SINKS
SINK_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # what each needs installed


@dataclass
class RunConfig:
    name: str = "run"
    output_dir: str = "runs"
    seed: int = 0

    def check(self) -> None:
        require(bool(re.fullmatch(r"[A-Za-z0-9._-]+", self.name)) and self.name not in (".", ".."), "run.name",
                "a plain folder name: letters, digits, '.', '_' or '-' (not '.' or '..')")


@dataclass
class CheckpointConfig:
    save_final: bool = True
    every: int = 0  # 0: only the final checkpoint
    keep_last: int = 3  # step checkpoints kept (older ones deleted once a newer one is complete); 0: all
    resume: Optional[str] = None  # null | auto (newest valid checkpoint of this run) | a checkpoint folder

    def check(self) -> None:
        require(self.every >= 0, "checkpoint.every", "must be >= 0")
        require(self.keep_last >= 0, "checkpoint.keep_last", "must be >= 0")
        if self.resume not in (None, "auto"):
            require(os.path.isdir(os.path.expanduser(self.resume)), "checkpoint.resume",
                    f"must be null, auto or a checkpoint folder; no such folder: {self.resume}")


def resolve_token(token_env: str = "RLVR_TOKEN", token_file: str | None = None) -> str | None:
    """The control token: the file's content if given and non-empty, else the env variable's, else None.

    Whitespace around the token (a trailing newline in the file) is stripped. A
    token file that is named but missing raises FileNotFoundError: a typo must
    not quietly turn control off.
    """
    if token_file:
        with open(os.path.expanduser(token_file), encoding="utf-8") as f:
            token = f.read().strip()
        if token:
            return token
    token = os.environ.get(token_env, "").strip() if token_env else ""
    return token or None


@dataclass
class ServiceConfig:
    enabled: bool = False  # serve the status/control API (and dashboard) while the run is active
    host: str = "127.0.0.1"
    port: int = 8777
    token_env: str = "RLVR_TOKEN"  # control endpoints need `Authorization: Bearer <token>` from this variable...
    token_file: Optional[str] = None  # ...or from this file; with neither, control endpoints are refused
    heartbeat_s: float = 5.0  # status.json refreshed this often; a run silent for 6x this shows `stale`
    # On a host other than 127.0.0.1/::1/localhost, reads (GET /api/..., /metrics) need the token
    # too, and without a token the service refuses to start; true opens reads to anyone who can
    # connect (one warning line at start). Loopback reads are always open.
    public_read: bool = False
    # Host-header names answered besides the bound host, localhost, 127.0.0.1 and ::1 (and this
    # machine's hostname on 0.0.0.0/::): a DNS-rebinding guard; other names get 400. "*": any
    allowed_hosts: List[str] = field(default_factory=list)

    def check(self) -> None:
        require(0 <= self.port <= 65535, "service.port", "must be a TCP port (0: any free port)")
        require(self.heartbeat_s > 0, "service.heartbeat_s", "must be > 0")
        for name in self.allowed_hosts:
            require(bool(re.fullmatch(r"\*|\[?[A-Za-z0-9._:-]+\]?(:[0-9]+)?", name)), "service.allowed_hosts",
                    f"entries are host names or addresses (\"*\": any), got {name!r}")
        if self.token_file is not None:
            require(os.path.isfile(os.path.expanduser(self.token_file)), "service.token_file",
                    f"no such file: {self.token_file}")


@dataclass
class WandbConfig:
    project: str = "rlvr"
    entity: Optional[str] = None
    mode: Literal["offline", "online", "disabled"] = "offline"  # offline: no network (`wandb sync` later)


@dataclass
class MlflowConfig:
    tracking_uri: Optional[str] = None  # default: a file store in <run>/mlruns
    experiment: str = "rlvr"


@dataclass
class LoggingConfig:
    progress: bool = True  # progress bar over steps
    # false: engine/trainer/worker output goes to <run>/logs/<role>-<pid>.log, Ray's lines stay off the
    # console; true (`rlvr train --verbose`): everything on the console, as Ray prints it
    verbose: bool = False
    print_samples: int = 1  # completions printed at each eval (0: none)
    samples_per_step: int = 32  # samples (prompt, completion, rewards) kept per step in <run>/samples/ (0: none)
    jsonl: bool = True
    plots: bool = True  # PNG charts in <run>/plots/ at the end of the run (rlvr.run.plots; also `rlvr plot RUN`)
    sinks: List[Sink] = field(default_factory=list)  # besides metrics.jsonl (rlvr.run.sinks)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)

    def check(self) -> None:
        missing = missing_packages(list(self.sinks))
        require(not missing, "logging.sinks", f"needs {', '.join(missing)} installed (pip install {' '.join(missing)})")
        require(self.samples_per_step >= 0, "logging.samples_per_step", "must be >= 0")


def missing_packages(sinks: list[str]) -> list[str]:
    """The packages `sinks` need that are not installed (found without importing them)."""
    return [SINK_PACKAGES[n] for n in sinks if n in SINK_PACKAGES and importlib.util.find_spec(SINK_PACKAGES[n]) is None]
