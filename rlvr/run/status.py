"""`status.json`: the run's state, written by the driver and read by whoever watches it.

A run folder `runs/<name>/` is the only thing the driver and the status service share, so
the service works the same inside the driver process (a thread) and as a separate `rlvr
serve` process, and a finished run stays browsable. The folder (each file has one module):

    status.json                  here: RunStatus writes it, read_status / list_runs read it
    metrics.jsonl                rlvr.run.metrics: one JSON object per step
    samples/step_000042.jsonl    rlvr.run.samples: prompts, completions and rewards of a step
    control/<time_ns>-<action>.json   rlvr.run.control: pause / resume / checkpoint / stop requests
    checkpoints/<name>/          rlvr.run.checkpoint: atomic checkpoint folders
    recipe.yaml                  the resolved recipe

Every file is written with `rlvr.run.files.atomic_write`: a reader sees the old version or
the new one, never half of one.

States. The driver writes `pending` (set up, before step 1), `running`,
`paused`, and at the end `completed`, `failed` or `stopped` (a stop request).
The reader adds two of its own:
  * `stale`: the file says pending/running/paused but the heartbeat is older than
    `stale_after = max(30, 6 * heartbeat_s)` s, or the writer's pid is dead (checked
    only when the run's hostname is this host; a pid namespace shared with the
    driver is assumed, as on one machine).
  * `unknown`: a folder from before status.json existed (metrics.jsonl only) with no
    `checkpoints/final`. Without a heartbeat a crashed run and a live one look the
    same, so the reader does not guess; with `checkpoints/final` it is `completed`.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import threading
import time

from rlvr.run.files import atomic_write_text, dumps, jsonable, regular_file

ACTIVE_STATES = ("pending", "running", "paused")
FINAL_STATES = ("completed", "failed", "stopped")
WRITTEN_STATES = ACTIVE_STATES + FINAL_STATES
READER_STATES = ("stale", "unknown", "unreadable")  # unreadable: a run folder the reader cannot make sense of

STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
RECIPE_FILE = "recipe.yaml"
CHECKPOINTS_DIR = "checkpoints"


class RunNotFound(LookupError):
    """A run name that is not a direct sub-folder of the runs folder holding a run."""


def stale_after(heartbeat_s: float) -> float:
    """Seconds without a heartbeat after which an active run is reported `stale`.

    >>> stale_after(5.0), stale_after(10.0)
    (30.0, 60.0)
    """
    return max(30.0, 6.0 * float(heartbeat_s))


def is_valid_run_name(name: str) -> bool:
    """A run name usable in a URL: one path component, no traversal, no hidden folders.

    >>> [is_valid_run_name(n) for n in ("grpo-1", "a.b_c", "my run", "..", ".hidden", "a/b", "", "x\\\\y")]
    [True, True, True, False, False, False, False, False]
    """
    return (isinstance(name, str) and 0 < len(name) <= 255 and not name.startswith(".")
            and not any(c in "/\\" or ord(c) < 32 for c in name))


class RunStatus:
    """Writes <run_dir>/status.json atomically (tmp file + fsync + os.replace).

    Every write carries a fresh `heartbeat` (unix time). `start_heartbeat()`
    rewrites the file every `heartbeat_s` seconds from a daemon thread, so a run
    blocked in a long phase still shows as alive, and a dead one goes `stale`.
    `update` and the heartbeat thread share one lock: writes never interleave.
    """

    def __init__(self, run_dir: str, run_name: str, total_steps: int, heartbeat_s: float = 5.0,
                 ray_job_id: str | None = None):
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s must be > 0, got {heartbeat_s}")
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, STATUS_FILE)
        self.heartbeat_s = float(heartbeat_s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fields: dict = {
            "run_name": run_name, "state": "pending", "step": 0, "total_steps": int(total_steps),
            "phase": None, "pid": os.getpid(), "hostname": socket.gethostname(),
            "started_at": time.time(), "finished_at": None, "heartbeat": None,
            "heartbeat_s": self.heartbeat_s, "ray_job_id": ray_job_id, "weight_version": None,
            "last_step_timings": {}, "latest_metrics": {}, "reward_failures": {},
            "checkpoints": [], "control": None, "error": None, "service_url": None,
        }
        with self._lock:
            self._write()

    def _write(self, changes: dict | None = None) -> None:  # caller holds the lock
        fields = {**self._fields, **(changes or {}), "heartbeat": time.time()}
        text = dumps(fields) + "\n"  # a value JSON cannot hold fails here, before it is merged
        atomic_write_text(self.path, text)
        self._fields = fields

    def update(self, **fields) -> None:
        """Merge `fields` (state, step, phase, weight_version, latest_metrics, ...) and write."""
        state = fields.get("state")
        if state is not None and state not in WRITTEN_STATES:
            raise ValueError(f"unknown run state {state!r}; expected one of {WRITTEN_STATES}")
        with self._lock:
            self._write(fields)

    def snapshot(self) -> dict:
        """A copy of the fields as last written."""
        with self._lock:
            return json.loads(dumps(self._fields))

    def start_heartbeat(self) -> None:
        """Rewrite the file with a fresh heartbeat every `heartbeat_s` s until `close`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._beat, name="rlvr-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                with self._lock:
                    if not self._stop.is_set():
                        self._write()
            except OSError as e:  # a full disk must not kill the run; the reader will see `stale`
                print(f"[rlvr] status heartbeat: could not write {self.path}: {e}", file=sys.stderr)

    def close(self, state: str, error: str | None = None) -> None:
        """Write the final state (`completed`, `failed` or `stopped`) and stop the heartbeat."""
        if state not in FINAL_STATES:
            raise ValueError(f"final state must be one of {FINAL_STATES}, got {state!r}")
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.heartbeat_s))
            self._thread = None
        with self._lock:
            self._write({"state": state, "finished_at": time.time(), **({} if error is None else {"error": error})})



# ---- reader side (the service, `rlvr status`) ----

MAX_READ_BYTES = 4 << 20  # status.json and recipe.yaml: larger ones are not read


def _read_json(path: str) -> dict | None:
    if not regular_file(path, MAX_READ_BYTES):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError):
        return None
    return jsonable(data) if isinstance(data, dict) else None


def _last_metrics_row(run_dir: str) -> dict | None:
    """The last complete row of metrics.jsonl, reading only the file's tail."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not regular_file(path):
        return None
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(row, dict):
            return jsonable(row)
    return None


MAX_RECIPE_NESTING = 64  # [ and { nesting; rlvr's recipes have 2 or 3


def _flow_depth(text: str) -> int:
    """The deepest [ / { nesting in `text` (quotes not considered: an over-count only refuses).

    >>> _flow_depth("a: [1, {b: [2]}]\\nc: []"), _flow_depth("[" * 500)
    (3, 500)
    """
    depth = deepest = 0
    for ch in re.sub(r"[^\[\]{}]+", "", text):
        depth = depth + 1 if ch in "[{" else max(0, depth - 1)
        deepest = max(deepest, depth)
    return deepest


def _read_recipe(run_dir: str) -> dict | None:
    import yaml

    path = os.path.join(run_dir, RECIPE_FILE)
    if not regular_file(path, MAX_READ_BYTES):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if _flow_depth(text) > MAX_RECIPE_NESTING:
            return None  # PyYAML's scanner is quadratic in "[[[[..." nesting: a 4 MB one takes hours
        if any(isinstance(t, (yaml.AnchorToken, yaml.AliasToken)) for t in yaml.scan(text)):
            return None  # rlvr never writes aliases; a "billion laughs" would cost seconds and GBs a request
        recipe = yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError, RecursionError):
        return None
    if not isinstance(recipe, dict):
        return None
    from rlvr.config.redact import redact

    return jsonable(redact(recipe))  # a folder written before secrets were redacted is served redacted


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):  # gone, or no pid at all
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def is_run_dir(path: str) -> bool:
    """A real folder (not a symlink out of the runs folder) with a status.json or metrics.jsonl."""
    return (os.path.isdir(path) and not os.path.islink(path)
            and (regular_file(os.path.join(path, STATUS_FILE)) or regular_file(os.path.join(path, METRICS_FILE))))


def resolve_run(runs_dir: str, run: str) -> str:
    """The folder of run `run`, or RunNotFound: only existing direct sub-folders holding a run."""
    if not is_valid_run_name(run):
        raise RunNotFound(run)
    path = os.path.join(runs_dir, run)
    if not (os.path.isdir(path) and is_run_dir(path)):
        raise RunNotFound(run)
    return path


def _summary(run_dir: str, now: float) -> dict:
    """State and progress: status.json with the reader's `stale`/`unknown` applied."""
    status = _read_json(os.path.join(run_dir, STATUS_FILE))
    out: dict = {"run": os.path.basename(os.path.normpath(run_dir)), "has_status": status is not None}
    if status is None:  # a run from before status.json: judge by its files
        last = _last_metrics_row(run_dir) or {}
        recipe = _read_recipe(run_dir) or {}
        trainer = recipe.get("trainer") if isinstance(recipe.get("trainer"), dict) else {}
        final = os.path.isdir(os.path.join(run_dir, CHECKPOINTS_DIR, "final"))
        out.update(state="completed" if final else "unknown", reported_state=None, step=last.get("step"),
                   total_steps=trainer.get("total_steps"), heartbeat=None, heartbeat_age=None,
                   latest_metrics=last,
                   last_step_timings={k: v for k, v in last.items() if k.startswith("timing/")},
                   weight_version=last.get("weight_version"))
        return out
    out.update(status)
    reported = status.get("state")
    heartbeat = status.get("heartbeat")
    every = status.get("heartbeat_s")  # the file is not trusted: a wrong type reads as the default
    limit = stale_after(every if _number(every) and 0 < every < 1e9 else 5.0)
    age = now - heartbeat if _number(heartbeat) else None
    pid = status.get("pid")
    dead = (status.get("hostname") == socket.gethostname() and isinstance(pid, int) and pid > 0
            and not _pid_alive(pid))
    state = reported
    if reported in ACTIVE_STATES and (age is None or age > limit or dead):
        state = "stale"
    out.update(run=os.path.basename(os.path.normpath(run_dir)), state=state, reported_state=reported,
               heartbeat_age=age, stale_after=limit)
    return out


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _guarded_summary(run_dir: str, now: float) -> dict:
    """`_summary`, or for a folder it cannot make sense of, state `unreadable` and why: one bad
    run folder never breaks the listing or the other runs."""
    try:
        return _summary(run_dir, now)
    except Exception as e:  # noqa: BLE001 - whatever a hostile or broken folder holds
        return {"run": os.path.basename(os.path.normpath(run_dir)), "state": "unreadable", "reported_state": None,
                "error": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}


def read_status(run_dir: str, now: float | None = None) -> dict:
    """Everything about one run: status.json fields, computed `state`, on-disk checkpoints, recipe."""
    now = time.time() if now is None else now
    out = _guarded_summary(run_dir, now)
    try:
        out["checkpoints"] = checkpoint_names(run_dir)
    except OSError:
        out["checkpoints"] = []
    out["recipe"] = _read_recipe(run_dir)
    for key, empty in (("last_step_timings", {}), ("latest_metrics", {}), ("reward_failures", {}),
                       ("phase", None), ("error", None), ("ray_job_id", None), ("weight_version", None)):
        out.setdefault(key, empty)
    return out


def list_runs(runs_dir: str, now: float | None = None) -> list[dict]:
    """One summary per run folder (status.json or metrics.jsonl), most recently started first."""
    now = time.time() if now is None else now
    try:
        names = os.listdir(runs_dir)
    except FileNotFoundError:
        return []
    rows = []
    for name in names:
        path = os.path.join(runs_dir, name)
        if not (is_valid_run_name(name) and os.path.isdir(path) and is_run_dir(path)):
            continue
        s = _guarded_summary(path, now)
        started = s.get("started_at")
        if not _number(started):
            started = os.path.getmtime(path)
        rows.append({"run": name, "state": s["state"], "step": s.get("step"),
                     "total_steps": s.get("total_steps"), "phase": s.get("phase"),
                     "heartbeat": s.get("heartbeat"), "heartbeat_age": s.get("heartbeat_age"),
                     "started_at": started})
    rows.sort(key=lambda r: (-r["started_at"], r["run"]))
    return rows




def checkpoint_names(run_dir: str) -> list[str]:
    """The run's sealed checkpoints as paths relative to the run folder, oldest first."""
    from rlvr.run.checkpoint import list_checkpoints

    return [os.path.relpath(folder, run_dir) for _, folder in reversed(list_checkpoints(run_dir))]
