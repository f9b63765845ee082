"""The bubblewrap (`bwrap`) layer of `rlvr.reward.sandbox`: its command line, and for root
the step that lets bwrap run as the unprivileged host user `nobody`.

The child's host identity: as root, the forked child (before exec of bwrap) enters a
private mount namespace, binds the interpreter's directories (opened beforehand) onto a
tmpfs over /tmp *of that namespace only* (so `nobody` can reach them even under a 0700
/root), then drops to uid/gid 65534 with no groups and execs bwrap, which creates the
user namespace itself. Inside and outside, every sandboxed process is uid 65534: it owns
no host file and no host process. Not root: bwrap runs as the current user (its
processes map to that user outside) with the same namespaces.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sys

NOBODY = 65534
CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
_STAGE = "/tmp/rlvr-bind-"  # mount points in the child's private mount namespace only
_ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def bwrap_binary() -> str | None:
    return shutil.which("bwrap")


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def interpreter(python: str | None) -> tuple[str, list[str]]:
    """The real interpreter binary, and the host directories besides /usr that it needs
    read-only (its installation prefix: a venv's base interpreter, pyenv, ...)."""
    exe = os.path.realpath(python or sys.executable)
    prefix = os.path.realpath(sys.base_prefix if python is None else os.path.dirname(os.path.dirname(exe)))
    dirs = [] if _under(prefix, "/usr") else [prefix]
    if not any(_under(exe, d) for d in ["/usr", *dirs]):
        dirs.append(os.path.dirname(exe))
    return exe, dirs


def command(bwrap: str, exe: str, dirs: list[str], workdir: str, source_fd: int, disk_bytes: int,
            env: dict[str, str], staged: bool) -> list[str]:
    """The bwrap argv running `exe -I -S -B main.py` in `workdir` (created on the size-limited
    /tmp tmpfs, main.py copied in from `source_fd`). `staged`: the host directories are
    reachable at the stage mount points (root) instead of their own paths."""
    argv = [bwrap, "--unshare-all", "--uid", str(NOBODY), "--gid", str(NOBODY), "--hostname", "sandbox",
            "--cap-drop", "ALL", "--new-session", "--die-with-parent", "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in _ROOT_LINKS:  # Debian's merged /usr: /lib -> usr/lib, ...
        path = "/" + name
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for i, d in enumerate(dirs):
        argv += ["--ro-bind", f"{_STAGE}{i}" if staged else d, d]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
             "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
             "--size", str(int(disk_bytes)), "--tmpfs", "/tmp", "--dir", workdir,
             "--file", str(source_fd), workdir + "/main.py", "--chdir", workdir,
             "--remount-ro", "/", exe, "-I", "-S", "-B", "main.py"]
    return argv


class Stage:
    """Root only, applied in the forked child (preexec) before the rlimits: private mount
    namespace, interpreter dirs bound at the stage points, then uid/gid 65534. The dirs
    are opened (O_PATH) in the new namespace before /tmp is covered, and closed before
    exec, so bwrap and the sandbox never hold them."""

    def __init__(self, dirs: list[str]):
        self.dirs = dirs
        self.libc = ctypes.CDLL(None, use_errno=True)

    def _mount(self, source, target, fstype, flags, data) -> None:
        if self.libc.mount(source, target, fstype, flags, data) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"mount {target!r}: {os.strerror(errno)}")

    def apply(self) -> None:
        if self.libc.unshare(CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
        self._mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None)
        fds = [os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for d in self.dirs]
        self._mount(b"tmpfs", b"/tmp", b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=0755,size=64k")
        for i, fd in enumerate(fds):
            target = f"{_STAGE}{i}".encode()
            os.mkdir(target, 0o755)
            self._mount(f"/proc/self/fd/{fd}".encode(), target, None, _MS_BIND | _MS_REC, None)
            os.close(fd)
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
