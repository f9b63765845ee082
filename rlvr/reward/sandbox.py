"""Run untrusted Python (a model's solution) in a sandbox it cannot leave.

`run_python(source, stdin, ...)` runs `source` as main.py in a fresh work dir with a
separate interpreter (`python -I -S -B`: no site-packages, no PYTHON* variables, script
dir not on sys.path) and returns a `SandboxResult`. It is the inner layer under the
reward pool's own hard kill (`rlvr/reward/pool.py`): a verifier calls it once per test run.

Two mechanisms; `SandboxResult.isolation` says which one ran:
  * "bwrap" (bubblewrap, `apt-get install bubblewrap`; used whenever it is on PATH and a
    one-time probe run per process works; `sandbox_bwrap.py` builds the command).
  * "fallback" (no bwrap, or `RLVR_SANDBOX=fallback`, or `isolation="fallback"`): the
    weaker mechanism below; the first such run prints one warning per process.

Under bwrap, what IS isolated (tests/unit/test_sandbox_hostile.py runs each as a hostile
program; the same programs escape the fallback, which the suite checks as strict xfails):
  * Identity: uid/gid 65534 inside a new user namespace with every capability dropped and
    no_new_privs; as root the launcher drops to 65534 before exec of bwrap, so on the host
    too every sandboxed process is `nobody` (it owns no host file or process).
  * Processes: a new pid namespace with its own /proc: it sees only its own processes, so
    it cannot read other processes' /proc/*/environ (tokens) nor signal host pids; setns()
    into /proc/<ppid>/ns/net fails (no such process visible, no capability).
  * Network: a new network namespace (loopback down): 127.0.0.1, ::1 and the run's
    control API are unreachable. Also new ipc, uts and cgroup namespaces.
  * Files: only /usr, the /lib* symlinks, the interpreter's installation prefix and
    /etc/ld.so.cache are mounted, read-only; plus bwrap's minimal /dev (read-only; the
    device nodes null, zero, random... stay usable) and a fresh /proc. No /sys (so no
    cgroup files), no repo, /work, /root or host /tmp: host files can be neither read nor
    written. The root is read-only; the only writable place is a private tmpfs /tmp of
    `max_disk_mb` (default max(16, 4 * max_file_mb)) holding the work dir
    /tmp/rlvr-sandbox-<id>: writing past it fails with ENOSPC, the host disk is untouched,
    and it vanishes with the sandbox.
  * Lifetime: the interpreter runs under bwrap's pid-1 reaper; killing bwrap (wall-clock
    timeout, output cap, end of run; `--die-with-parent` when the verifier dies) tears
    down the pid namespace, so setsid()/double-forked children die with it.
  * Environment: cleared, then PATH=/usr/bin:/bin, HOME=TMPDIR=the work dir, PWD (bwrap
    sets it), LANG=C.UTF-8, PYTHONIOENCODING=utf-8.
  * Resources (both mechanisms): RLIMIT_CPU (`cpu_s`; SIGXCPU, then SIGKILL one second
    later), wall clock (`timeout_s`, then SIGKILL to the whole tree; `timed_out=True`),
    RLIMIT_AS (`memory_mb` per process: a 2 GB bytearray raises MemoryError),
    RLIMIT_FSIZE (`max_file_mb` per file), RLIMIT_CORE 0, and process count: where a
    cgroup-v1 `pids` hierarchy is writable (root in most containers) the tree runs in a
    fresh cgroup with pids.max = max_procs (+2 for bwrap under bwrap), emptied and removed
    afterwards; else RLIMIT_NPROC for a non-root sandbox user. `proc_limit` says which
    ("cgroup" / "rlimit" / "none"). stdout and stderr are each capped at
    `max_output_bytes` (1 MB): past that the run is killed (`killed_reason="output limit"`).
    bwrap reports a child killed by signal N as exit 128+N; that is mapped back to -N, so
    a program that itself exits with 129..192 is reported as killed by a signal.

What is NOT isolated, even under bwrap:
  * The kernel: same kernel, no seccomp filter (bwrap's --seccomp is not used), so kernel
    bugs reachable from an unprivileged user namespace are out of scope.
  * Memory in total: RLIMIT_AS is per process and there is no memory cgroup, so up to
    max_procs processes * memory_mb, plus the /tmp tmpfs, SysV shm or memfds held until
    the run ends, count against the machine's (container's) memory. CPU time is per
    process too.
  * Reading the mounted system files (/usr, the Python installation): anything there is
    visible to the program.

The fallback (no bwrap): the child runs as this user (root here) in its own session and a
new, empty network namespace (ctypes unshare(CLONE_NEWNET), needs root; `net_isolated`
says whether it applied), with the pids cgroup and rlimits above and a temp dir on the
host disk (deleted afterwards). It is NOT a security boundary: the program can read and
write any file this user can, read other processes' environments (tokens) through /proc,
setns() back into the host network namespace and reach 127.0.0.1, signal other processes,
move itself out of the pids cgroup and setsid() to outlive the run, and fill the disk
(RLIMIT_FSIZE is per file). Use it only for buggy, not malicious, code.
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
import threading
import time
import uuid
from dataclasses import dataclass

from rlvr.reward.sandbox_bwrap import NOBODY, Stage, bwrap_binary, command, interpreter

CLONE_NEWNET = 0x40000000
MAX_OUTPUT_BYTES = 1 << 20
_PIDS_V1 = "/sys/fs/cgroup/pids"


@dataclass
class SandboxResult:
    """What one sandboxed run did. `killed_reason` is why the sandbox or the kernel
    stopped it ("timeout", "output limit", "cpu limit", "file size limit",
    "signal SIGKILL" ...), None when it exited by itself. `isolation` says which
    mechanism ran it: "bwrap" or "fallback" (see the module docstring)."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    killed_reason: str | None
    wall_s: float
    net_isolated: bool = False
    proc_limit: str = "none"  # "cgroup" | "rlimit" | "none"
    isolation: str = "fallback"  # "bwrap" | "fallback"


def run_python(source: str, stdin: str = "", *, timeout_s: float, cpu_s: float, memory_mb: int,
               max_file_mb: int, max_procs: int, python: str | None = None,
               max_output_bytes: int = MAX_OUTPUT_BYTES, max_disk_mb: int | None = None,
               isolation: str = "auto") -> SandboxResult:
    """Run `source` as a script with `stdin`, under the limits in the module docstring.

    `isolation`: "auto" (bwrap when it works, else the fallback with one warning per
    process; `RLVR_SANDBOX=fallback` in the environment forces the fallback), "bwrap"
    (RuntimeError if it does not work) or "fallback". `max_disk_mb` sizes the bwrap
    run's private /tmp (default max(16, 4 * max_file_mb)).

    >>> r = run_python("print(input()[::-1])", "abc", timeout_s=5, cpu_s=5, memory_mb=256, max_file_mb=1, max_procs=16)
    >>> r.returncode, r.stdout, r.timed_out
    (0, 'cba\\n', False)
    """
    use_bwrap = _choose(isolation, python)
    disk_mb = max_disk_mb if max_disk_mb is not None else max(16, 4 * int(max_file_mb))
    limits = dict(timeout_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb, max_file_mb=max_file_mb,
                  max_procs=max_procs, python=python, max_output_bytes=max_output_bytes, disk_mb=disk_mb)
    return (_run_bwrap if use_bwrap else _run_fallback)(source, stdin, **limits)


def bwrap_status(python: str | None = None) -> tuple[bool, str]:
    """(works, detail): whether runs go through bwrap here (probed once per process)."""
    key = python or ""
    if key not in _PROBED:
        with _PROBE_LOCK:
            if key not in _PROBED:
                _PROBED[key] = _probe(python)
    return _PROBED[key]


_PROBED: dict[str, tuple[bool, str]] = {}
_PROBE_LOCK = threading.Lock()
_WARNED = False


def _probe(python: str | None) -> tuple[bool, str]:
    binary = bwrap_binary()
    if binary is None:
        return False, "bwrap not found on PATH"
    try:
        r = _run_bwrap("print('ok')", "", timeout_s=10, cpu_s=5, memory_mb=256, max_file_mb=1, max_procs=8,
                       python=python, max_output_bytes=4096, disk_mb=1)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"{binary} failed to start: {e}"
    if r.returncode != 0 or r.stdout != "ok\n":
        return False, f"{binary} does not work here (exit {r.returncode}): {r.stderr.strip()[-300:]}"
    return True, f"{binary} works"


def _choose(isolation: str, python: str | None) -> bool:
    global _WARNED
    if isolation not in ("auto", "bwrap", "fallback"):
        raise ValueError(f"isolation must be auto, bwrap or fallback, got {isolation!r}")
    if isolation == "fallback" or (isolation == "auto" and os.environ.get("RLVR_SANDBOX") == "fallback"):
        return False
    works, detail = bwrap_status(python)
    if isolation == "bwrap" and not works:
        raise RuntimeError(f"sandbox: bwrap requested but {detail}")
    if not works and not _WARNED:
        _WARNED = True
        print(f"rlvr: WARNING: the code sandbox runs WITHOUT bubblewrap ({detail}): model code can read "
              "the host's files and processes. Install it: apt-get install bubblewrap", file=sys.stderr, flush=True)
    return works


def _run_bwrap(source, stdin, *, timeout_s, cpu_s, memory_mb, max_file_mb, max_procs, python,
               max_output_bytes, disk_mb) -> SandboxResult:
    """One run inside bwrap (uid 65534, all namespaces, private /tmp; see the docstring)."""
    root = os.geteuid() == 0
    exe, dirs = interpreter(python)
    workdir = f"/tmp/rlvr-sandbox-{uuid.uuid4().hex[:12]}"  # exists only inside the sandbox
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
           "PYTHONIOENCODING": "utf-8"}
    cgroup = _make_pids_cgroup(max_procs + 2)  # + bwrap and its pid-1 reaper
    sandbox_uid = NOBODY if root else os.getuid()
    proc_limit = "cgroup" if cgroup else ("rlimit" if sandbox_uid != 0 else "none")
    nproc = _user_process_count(sandbox_uid) + max_procs + 2 if proc_limit == "rlimit" else None
    stage = Stage(dirs) if root else None
    start = time.monotonic()
    proc = None
    try:
        with tempfile.TemporaryFile() as stdin_file, tempfile.TemporaryFile() as source_file:
            stdin_file.write(stdin.encode("utf-8", "replace"))
            stdin_file.seek(0)
            source_file.write(source.encode("utf-8", "surrogateescape"))
            source_file.seek(0)
            argv = command(bwrap_binary() or "bwrap", exe, dirs, workdir, source_file.fileno(),
                           disk_mb << 20, env, staged=root)
            limits = _Limits(cpu_s, memory_mb, max_file_mb, nproc, cgroup, None, stage)
            proc = subprocess.Popen(
                argv, cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, stdin=stdin_file,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(source_file.fileno(),),
                preexec_fn=limits.apply, start_new_session=True, close_fds=True)
        stdout, stderr, reason = _collect(proc, start + timeout_s, max_output_bytes)
        returncode = proc.wait()
    finally:
        if proc is not None:
            _kill_all(proc, cgroup)
        if cgroup:
            _remove_cgroup(cgroup)
    if 128 < returncode < 128 + 65:  # bwrap reports a child killed by signal N as 128 + N
        returncode = 128 - returncode
    if reason is None and returncode < 0:
        reason = _signal_reason(-returncode)
    return SandboxResult(returncode, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"),
                         reason == "timeout", reason, time.monotonic() - start, True, proc_limit, "bwrap")


def _run_fallback(source, stdin, *, timeout_s, cpu_s, memory_mb, max_file_mb, max_procs, python,
                  max_output_bytes, disk_mb) -> SandboxResult:
    """One run without bwrap: as this user, net namespace + pids cgroup + rlimits only."""
    del disk_mb  # no private tmpfs here: the temp dir is on the host's disk
    workdir = tempfile.mkdtemp(prefix="rlvr-sandbox-")
    cgroup = _make_pids_cgroup(max_procs)
    proc_limit = "cgroup" if cgroup else ("rlimit" if os.geteuid() != 0 else "none")
    nproc = _user_process_count(os.getuid()) + max_procs if proc_limit == "rlimit" else None
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
            limits = _Limits(cpu_s, memory_mb, max_file_mb, nproc, cgroup, status_w, None)
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

    def __init__(self, cpu_s, memory_mb, max_file_mb, nproc, cgroup, status_fd, stage):
        self.cpu = max(1, int(round(cpu_s)))
        self.mem, self.fsize = int(memory_mb) << 20, int(max_file_mb) << 20
        self.nproc, self.cgroup, self.status_fd, self.stage = nproc, cgroup, status_fd, stage
        self.libc = ctypes.CDLL(None, use_errno=True)

    def apply(self) -> None:
        if self.cgroup:  # first, so everything this child starts is counted
            with open(os.path.join(self.cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        if self.stage is not None:  # bwrap as root: private mounts, then uid 65534
            self.stage.apply()
        self.libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (after setuid, which clears it)
        if self.status_fd is not None:  # the fallback's own network namespace
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


def _user_process_count(uid: int) -> int:
    """Processes (threads count too for RLIMIT_NPROC) of host user `uid`, from /proc."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    with open(f"/proc/{name}/status") as f:
                        count += next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
            except (OSError, StopIteration, ValueError):
                pass
    return count
