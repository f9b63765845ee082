"""Run untrusted Python (a model's solution) in a limited child process.

`run_python(source, stdin, ...)` writes `source` to a fresh temp directory, runs it
there with a separate interpreter (`python -I -S -B`, isolated mode: no site-packages,
no PYTHON* variables, no user site, script dir not on sys.path) and returns a
`SandboxResult`. It is the inner layer under the reward pool's own hard kill
(`rlvr/reward/pool.py`): a verifier calls it once per test run.

What IS limited (measured on the Linux CI machine kind, running as root):
  * CPU time: RLIMIT_CPU (`cpu_s`; SIGXCPU, then SIGKILL one second later).
  * Wall-clock time: `timeout_s`, after which the whole process group (and the
    pids cgroup, below) is SIGKILLed; `timed_out=True`.
  * Memory: RLIMIT_AS (`memory_mb` of address space per process), so allocating
    2 GB raises MemoryError in the child.
  * File size: RLIMIT_FSIZE (`max_file_mb` per written file; SIGXFSZ beyond).
  * Core dumps: RLIMIT_CORE 0.
  * Process count (fork bombs): RLIMIT_NPROC is per *user* and the kernel ignores
    it for root (CAP_SYS_RESOURCE), so as root it does nothing. What holds instead:
    where a cgroup-v1 `pids` hierarchy is writable (root in most containers), the
    child joins a fresh cgroup with `pids.max = max_procs`, so fork() fails past
    that; the cgroup is emptied (SIGKILL to every member, even ones that left the
    process group with setsid) and removed afterwards. `proc_limit` says which of
    "cgroup" / "rlimit" (non-root: the user's current process count + max_procs) /
    "none" applied. With "none" as root a fork bomb is only stopped by the
    wall-clock kill of the process group, and a child that calls setsid() escapes
    that kill: keep `timeout_s` short.
  * Leftovers: the child leads its own session/process group, which is SIGKILLed
    whenever the run ends (normally, timeout, output cap), so background children
    do not outlive the run. The child also gets PR_SET_PDEATHSIG(SIGKILL), so when
    the reward pool kills the verifier process mid-run the child dies with it (its
    own children and the temp dir are then left behind: the pool's kill does not
    reach them; the empty cgroup directory is removed by the next run).
  * Output: stdout and stderr are each capped at `max_output_bytes` (1 MB); past
    that the run is killed (`killed_reason="output limit"`) and output truncated.
  * Network: the child enters a new, empty network namespace (ctypes
    `unshare(CLONE_NEWNET)`, needs CAP_SYS_ADMIN, i.e. root here); it has only a
    loopback device that is down, so even 127.0.0.1 is unreachable. Where unshare
    is not permitted the run goes on WITH network; `net_isolated` records which.
  * Environment: scrubbed to PATH=/usr/bin:/bin, HOME=TMPDIR=the temp dir,
    LANG=C.UTF-8; no proxies, no tokens, nothing else inherited. cwd is the temp
    dir, deleted afterwards with everything written in it.

What is NOT isolated (this is NOT a security boundary against a determined attacker):
  * Same kernel, same user (root here): the code can read any file the parent can
    (including the repo and credentials on disk), and can WRITE or delete files
    outside its temp dir (rlimits do not stop writes; measured: a write to another
    directory succeeds and is not cleaned up). Kernel exploits are out of scope.
  * As root it could in principle leave its cgroup or namespace, or signal other
    processes (kill other users' work). No seccomp, no chroot, no user namespace.
  * Memory is per process (RLIMIT_AS), so max_procs processes may use up to
    max_procs * memory_mb together; no cgroup memory limit is applied.
Use it to contain buggy or runaway model code (infinite loops, fork bombs,
memory hogs, huge output, accidental network use), not malice.
"""

from __future__ import annotations

import ctypes
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
MAX_OUTPUT_BYTES = 1 << 20
_PIDS_V1 = "/sys/fs/cgroup/pids"


@dataclass
class SandboxResult:
    """What one sandboxed run did. `killed_reason` is why the sandbox or the kernel
    stopped it ("timeout", "output limit", "cpu limit", "file size limit",
    "signal SIGKILL" ...), None when it exited by itself."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    killed_reason: str | None
    wall_s: float
    net_isolated: bool = False
    proc_limit: str = "none"  # "cgroup" | "rlimit" | "none"


def run_python(source: str, stdin: str = "", *, timeout_s: float, cpu_s: float, memory_mb: int,
               max_file_mb: int, max_procs: int, python: str | None = None,
               max_output_bytes: int = MAX_OUTPUT_BYTES) -> SandboxResult:
    """Run `source` as a script with `stdin`, under the limits in the module docstring.

    >>> r = run_python("print(input()[::-1])", "abc", timeout_s=5, cpu_s=5, memory_mb=256, max_file_mb=1, max_procs=16)
    >>> r.returncode, r.stdout, r.timed_out
    (0, 'cba\\n', False)
    """
    workdir = tempfile.mkdtemp(prefix="rlvr-sandbox-")
    cgroup = _make_pids_cgroup(max_procs)
    proc_limit = "cgroup" if cgroup else ("rlimit" if os.geteuid() != 0 else "none")
    nproc = _user_process_count() + max_procs if proc_limit == "rlimit" else None
    status_r, status_w = os.pipe()  # the child reports whether unshare worked
    start = time.monotonic()
    proc = None
    try:
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
            f.write(source)
        with tempfile.TemporaryFile() as stdin_file:
            stdin_file.write(stdin.encode("utf-8", "replace"))
            stdin_file.seek(0)
            env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
                   "PYTHONIOENCODING": "utf-8"}
            limits = _Limits(cpu_s, memory_mb, max_file_mb, nproc, cgroup, status_w)
            proc = subprocess.Popen(
                [python or sys.executable, "-I", "-S", "-B", "main.py"], cwd=workdir, env=env,
                stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(status_w,),
                preexec_fn=limits.apply, start_new_session=True, close_fds=True)
        os.close(status_w)
        status_w = -1
        stdout, stderr, reason = _collect(proc, start + timeout_s, max_output_bytes)
        returncode = proc.wait()
        net_isolated = os.read(status_r, 1) == b"1"
    finally:
        if proc is not None:
            _kill_all(proc, cgroup)
        if status_w >= 0:
            os.close(status_w)
        os.close(status_r)
        if cgroup:
            _remove_cgroup(cgroup)
        shutil.rmtree(workdir, ignore_errors=True)
    if reason is None and returncode < 0:
        reason = _signal_reason(-returncode)
    return SandboxResult(returncode, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"),
                         reason == "timeout", reason, time.monotonic() - start, net_isolated, proc_limit)


class _Limits:
    """The preexec_fn: runs in the forked child before exec. Only async-signal-safe-ish
    work (syscalls, no imports, no locks)."""

    def __init__(self, cpu_s, memory_mb, max_file_mb, nproc, cgroup, status_fd):
        self.cpu = max(1, int(round(cpu_s)))
        self.mem, self.fsize = int(memory_mb) << 20, int(max_file_mb) << 20
        self.nproc, self.cgroup, self.status_fd = nproc, cgroup, status_fd
        self.libc = ctypes.CDLL(None, use_errno=True)

    def apply(self) -> None:
        if self.cgroup:  # first, so everything this child starts is counted
            with open(os.path.join(self.cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        self.libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die if the verifier process is killed
        isolated = self.libc.unshare(CLONE_NEWNET) == 0
        os.write(self.status_fd, b"1" if isolated else b"0")
        os.close(self.status_fd)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CPU, (self.cpu, self.cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.fsize, self.fsize))
        if self.nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.nproc, self.nproc))
        resource.setrlimit(resource.RLIMIT_AS, (self.mem, self.mem))  # last: the steps above allocate


def _collect(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, bytes, str | None]:
    """Read stdout/stderr until the child exits (and its pipes are drained), the
    deadline passes or one stream exceeds `cap`. Background processes the child left
    holding the pipes do not keep the run going: they are killed with its group."""
    out = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    reason = None
    exited = False
    with selectors.DefaultSelector() as sel:
        for pipe in out:
            sel.register(pipe, selectors.EVENT_READ)
        while sel.get_map() and reason is None:
            left = deadline - time.monotonic()
            if left <= 0:
                reason = "timeout"
                break
            exited = exited or proc.poll() is not None
            ready = sel.select(timeout=0 if exited else min(left, 0.05))
            if exited and not ready:
                break  # the child is gone and nothing is left to read
            for key, _ in ready:
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = out[key.fileobj]
                buf += chunk
                if len(buf) > cap:
                    del buf[cap:]
                    reason = "output limit"
    if reason is None:  # pipes closed; the process itself may still be running
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            reason = "timeout"
    _kill_group(proc.pid)
    for pipe in out:
        pipe.close()
    return bytes(out[proc.stdout]), bytes(out[proc.stderr]), reason


def _signal_reason(signum: int) -> str:
    if signum == signal.SIGXCPU:
        return "cpu limit"
    if signum == signal.SIGXFSZ:
        return "file size limit"
    try:
        return f"signal {signal.Signals(signum).name}"
    except ValueError:
        return f"signal {signum}"


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _kill_all(proc: subprocess.Popen, cgroup: str | None) -> None:
    """SIGKILL the child's process group and every member of its cgroup; reap the child."""
    _kill_group(proc.pid)  # the group outlives its leader while members remain
    if cgroup:
        for _ in range(100):
            pids = _cgroup_pids(cgroup)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _make_pids_cgroup(max_procs: int) -> str | None:
    """A fresh cgroup-v1 pids cgroup limited to max_procs tasks, or None if not permitted."""
    if not os.path.isdir(_PIDS_V1):
        return None
    _sweep_stale_cgroups()
    path = os.path.join(_PIDS_V1, f"rlvr-sandbox-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.mkdir(path)
    except OSError:
        return None
    try:
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write(str(int(max_procs)))
    except OSError:
        _remove_cgroup(path)
        return None
    return path


def _sweep_stale_cgroups() -> None:
    """Remove empty sandbox cgroups whose creating process is gone (it was killed mid-run)."""
    try:
        names = [n for n in os.listdir(_PIDS_V1) if n.startswith("rlvr-sandbox-")]
    except OSError:
        return
    for name in names:
        creator = name.split("-")[2]
        if creator.isdigit() and not os.path.exists(f"/proc/{creator}"):
            try:
                os.rmdir(os.path.join(_PIDS_V1, name))  # fails (harmlessly) while tasks remain
            except OSError:
                pass


def _cgroup_pids(cgroup: str) -> list[int]:
    try:
        with open(os.path.join(cgroup, "cgroup.procs")) as f:
            return [int(line) for line in f if line.strip()]
    except OSError:
        return []


def _remove_cgroup(cgroup: str) -> None:
    for _ in range(100):  # killed tasks leave the cgroup a moment after SIGKILL
        try:
            os.rmdir(cgroup)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)


def _user_process_count() -> int:
    """Processes (threads count too for RLIMIT_NPROC) of the current real user, from /proc."""
    uid, count = os.getuid(), 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    with open(f"/proc/{name}/status") as f:
                        count += next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
            except (OSError, StopIteration, ValueError):
                pass
    return count
