"""A long-lived child process that runs plugin code (verifiers, tools) under a hard wall-clock
kill: the machinery `rlvr.reward.worker.RewardWorker` and `rlvr.tools.worker.ToolWorker` share.

Why a child process and not a thread: plugin code can hold the GIL forever (a C bigint
power in math-verify, an infinite loop in a tool), where no alarm or thread can interrupt
it. The only sure stop is to kill the process. So the parent waits for each result at most
the call's timeout plus `GRACE_S`; on expiry it SIGKILLs the child (with its process
group, so helpers the plugin started go too) and starts a new one. A child that dies on its
own (os._exit, segfault) is seen the same way (its pipe closes).

The child is started with `subprocess` (`python -c`), not `multiprocessing`: Ray workers
are threaded (no fork), and spawn/forkserver would re-import the Ray worker's `__main__`
script in the child. It gets the parent's `sys.path` through PYTHONPATH, its own session
(no terminal Ctrl-C), and on Linux dies with its parent (PR_SET_PDEATHSIG), so a hung child
never outlives a killed actor. (The kernel ties that signal to the thread that started the
child; a sync Ray actor runs every method on one long-lived thread, so this holds there.)

Environment: the child does not inherit the parent's environment (which holds the run's
secrets: RLVR_TOKEN, HF_TOKEN, WANDB_API_KEY, cloud keys). It gets only the names in
`ENV_ALLOW` and those starting with one of `ENV_ALLOW_PREFIXES` (locale, thread counts,
offline Hugging Face caches, the visible GPUs), PYTHONPATH set to the parent's `sys.path`,
plus the names the recipe passes through on purpose (`reward.env_passthrough`,
`rollout.multi_turn.tool_env_passthrough`; `child_env`).

Every child that is killed on a timeout or found dead counts in `kills` (`restarts` is the
same number, its older name).

Protocol: the parent sends `("init", payload)`; the child answers `("ready", pid, info)`
or `("error", detail)`; then any number of `(kind, payload)` tasks, each answered by the
child with as many result messages as the task asks for; `("stop",)` ends it.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection

GRACE_S = 0.5  # added to each call's timeout before the hard kill
STARTUP_TIMEOUT_S = 120.0  # importing plugins (sympy, torch ...) on a loaded machine

# what a plugin's child process may see of the parent's environment (never a secret)
ENV_ALLOW = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "TERM",
    "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
    "RAYON_NUM_THREADS", "TOKENIZERS_PARALLELISM",
    "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_DATASETS_CACHE", "TRANSFORMERS_OFFLINE",
    "TRANSFORMERS_CACHE", "XDG_CACHE_HOME", "CUDA_VISIBLE_DEVICES", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
})
ENV_ALLOW_PREFIXES = ("LC_",)


def child_env(passthrough=()) -> dict[str, str]:
    """The environment of a plugin's child: the allow-list, the names in `passthrough` (the
    recipe's own choice, secrets included), and PYTHONPATH = the parent's `sys.path`."""
    keep = ENV_ALLOW | set(passthrough)
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith(ENV_ALLOW_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    return env


class IsolatedChild:
    """The parent's side. Subclasses set `entry` ("module:function", the child's main, which
    calls `serve`), and for messages `label`, `what` and `plugins` ("reward worker",
    "verifier process", "the verifiers")."""

    entry = ""
    label = "worker"
    what = "plugin process"
    plugins = "the plugins"
    startup_timeout_s = STARTUP_TIMEOUT_S  # how long the child may take to load the plugins

    def __init__(self, payload, env_passthrough=(), *, wait: bool = True):
        """`wait=False`: return once the child is started; `ready` turns true when `finish_start`
        has read its answer (`rlvr.cluster.pool` starts replacements that way)."""
        self._payload = payload
        self._passthrough = tuple(env_passthrough)
        self.kills = 0
        self.ready, self.ready_info, self.startup_s = False, None, 0.0
        self._proc: subprocess.Popen | None = None
        self._tasks = self._results = None
        self._spawn()
        if wait:
            self.finish_start(self.startup_timeout_s)

    @property
    def restarts(self) -> int:
        """The older name of `kills`: each killed (or dead) child is replaced by a new one."""
        return self.kills

    def _start(self) -> None:
        self._spawn()
        self.finish_start(self.startup_timeout_s)

    def _spawn(self) -> None:
        """Start the child and send it its plugins; `finish_start` reads its answer."""
        self._t0 = time.perf_counter()
        self.ready = False
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        env = child_env(self._passthrough)
        module, _, function = self.entry.partition(":")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", f"from {module} import {function}; {function}()", str(task_r), str(result_w),
             str(os.getpid())],
            pass_fds=(task_r, result_w), env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        os.close(task_r)
        os.close(result_w)
        self._tasks = Connection(task_w, readable=False)
        self._results = Connection(result_r, writable=False)
        self._send(("init", self._payload))

    def starting_for(self) -> float:
        return time.perf_counter() - self._t0

    def finish_start(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the child's answer to its init; RuntimeError if it could
        not load the plugins, died or did not answer."""
        status, reply = self._recv(timeout_s)
        if status != "ok" or reply[0] != "ready":
            detail = reply[1] if status == "ok" else f"the {self.what} {status} while starting"
            self.shutdown()
            raise RuntimeError(f"{self.label}: could not load {self.plugins}: {detail}")
        self.ready, self.ready_info = True, reply[2]
        self.startup_s = time.perf_counter() - self._t0

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _restart(self) -> None:
        self._kill()
        self._start()

    def _kill(self) -> None:
        """Kill the child (hung, or dead: its state is unknown) without starting another, and
        count it in `kills`; the next `_ensure_running` starts a new one."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self.kills += 1
            kill_group(proc)
        self._close_pipes()

    def _ensure_running(self) -> None:
        if not self._alive():
            self._restart()  # died while idle (counted): nothing was in flight

    def _close_pipes(self) -> None:
        for conn in (self._tasks, self._results):
            if conn is not None:
                conn.close()
        self._tasks = self._results = None

    def _send(self, message) -> None:
        if self._tasks is None:
            return  # stopped or killed
        try:
            self._tasks.send(message)
        except (BrokenPipeError, OSError):
            pass  # the child died; the following receive reports it

    def _recv(self, timeout_s: float) -> tuple[str, object]:
        """("ok", message), ("died", None) or ("timed out", None) after timeout_s."""
        try:
            if self._results.poll(max(timeout_s, 0.0)):
                return "ok", self._results.recv()
        except (EOFError, OSError):
            return "died", None
        return "timed out", None

    def _failure_reason(self, status: str, timeout_s: float) -> str:
        """Why no result came: the child hung (we kill it) or died by itself."""
        if status == "timed out":
            return f"timeout: no answer after {timeout_s:g} s ({self.what} killed)"
        try:
            code = self._proc.wait(timeout=5)  # its pipe closed: it is exiting
        except subprocess.TimeoutExpired:
            return f"exception: {self.what} closed its pipe and stopped answering"
        if code < 0:
            try:
                return f"exception: {self.what} died with signal {signal.Signals(-code).name}"
            except ValueError:
                return f"exception: {self.what} died with signal {-code}"
        return f"exception: {self.what} exited with code {code}"

    def pid(self) -> int | None:
        return self._proc.pid if self._alive() else None

    def shutdown(self, wait_s: float = 2.0) -> None:
        """Stop the child (politely for `wait_s`, then by force). Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            self._tasks.send(("stop",))
            proc.wait(timeout=wait_s)
        except Exception:
            pass
        kill_group(proc)
        self._close_pipes()

    def __del__(self):
        try:
            self.shutdown()
        except Exception:
            pass


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child and anything it started (it leads its own process group)."""
    if proc.poll() is None:  # not reaped yet, so its pid (= its group id) is still ours
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


# ---- the child's side ----


class SetupError(Exception):
    """Raised by a child's `setup` with the one-line reason the plugins could not load."""


def serve(setup, work) -> None:
    """A child's main loop: `setup(init payload) -> (state, ready info)` (SetupError: could
    not load), then `work(state, task payload, send)` for every task until told to stop."""
    task_fd, result_fd, parent_pid = (int(a) for a in sys.argv[1:4])
    _die_with_parent(parent_pid)
    tasks = Connection(task_fd, writable=False)
    results = Connection(result_fd, readable=False)
    _, payload = tasks.recv()
    try:
        state, info = setup(payload)
    except SetupError as e:
        results.send(("error", str(e)))
        return
    results.send(("ready", os.getpid(), info))
    while True:
        try:
            message = tasks.recv()
        except EOFError:  # the parent is gone
            return
        if message[0] == "stop":
            return
        work(state, message[1], results.send)


def call(fn, *args, **kwargs):
    """`fn(*args, **kwargs)`, awaited if it is an `async def` (an LLM judge, a remote service)."""
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    return result


async def _awaited(awaitable):
    return await awaitable


def raised(e: BaseException) -> str:
    """An exception as a one-line failure reason: `timeout: ...` or `exception: ...`."""
    kind = "timeout" if "timeout" in type(e).__name__.lower() else "exception"
    text = f"{kind}: {type(e).__name__}: {e}"
    return text if len(text) <= 500 else text[:497] + "..."


def _die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel SIGKILL us when the parent dies, even mid-hang."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
