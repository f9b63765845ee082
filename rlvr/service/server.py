"""Running the status app: in a daemon thread (inside the driver) or in the foreground (`rlvr serve`).

The listening socket is bound here, before uvicorn starts, so a busy port fails
in the caller with a plain OSError (uvicorn would `sys.exit` inside its thread)
and port 0 gives a real port to put in the URL. `start_in_thread` returns only
after uvicorn has started serving on that socket.

Who may read is decided here, from the bound address (`rlvr.service.access.read_policy`):
a non-loopback bind without a token and without `public_read` raises ServiceRefused before
any socket is bound; one with `public_read` prints one warning line.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass

from rlvr.config.run import resolve_token  # noqa: F401 - the control token; here for the service's callers


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def _url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app, own_process: bool):
    """A uvicorn.Server for `app`; in a driver's thread it leaves the process's logging alone."""
    import uvicorn

    logging = {"log_level": "info"} if own_process else {"log_level": "warning", "log_config": None}
    config = uvicorn.Config(app, access_log=False, lifespan="off", timeout_graceful_shutdown=2, **logging)
    return uvicorn.Server(config)


def _status_app(runs_dir: str, host: str, token: str | None, public_read: bool = False, allowed_hosts=()):
    """The app, with its access rules for `host`; ServiceRefused (nothing bound) for an open bind."""
    from rlvr.service.access import allowed_host_names, read_policy
    from rlvr.service.app import create_app

    reads_need_token, warning = read_policy(host, token, public_read)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    return create_app(runs_dir, token, reads_need_token, allowed_host_names(host, allowed_hosts))


@dataclass
class ServerHandle:
    """A server running in a daemon thread: `url`, and `stop()`."""

    url: str
    host: str
    port: int
    server: object
    thread: threading.Thread
    sock: socket.socket

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit and wait for its thread (forcing it after `timeout`)."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)
        self.sock.close()


def start_in_thread(runs_dir: str, host: str = "127.0.0.1", port: int = 8777, token: str | None = None,
                    start_timeout: float = 30.0, public_read: bool = False, allowed_hosts=()) -> ServerHandle:
    """Serve `runs_dir` from a daemon thread; returns once the server accepts connections."""
    app = _status_app(runs_dir, host, token, public_read, allowed_hosts)
    return start_app_in_thread(app, host, port, "rlvr-service", start_timeout)


def start_app_in_thread(app, host: str, port: int, name: str, start_timeout: float = 30.0) -> ServerHandle:
    """Serve an ASGI `app` from a daemon thread (the status service, the agent endpoint);
    returns once the server accepts connections."""
    sock = _bind(host, port)
    port = sock.getsockname()[1]
    server = _server(app, own_process=False)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"{name} did not start on {host}:{port}")
        time.sleep(0.01)
    return ServerHandle(url=_url(host, port), host=host, port=port, server=server, thread=thread, sock=sock)


def serve_forever(runs_dir: str, host: str = "127.0.0.1", port: int = 8777, token: str | None = None,
                  on_ready=None, public_read: bool = False, allowed_hosts=()) -> None:
    """Serve in this thread until SIGINT/SIGTERM; `on_ready(url)` is called once the socket is bound."""
    app = _status_app(runs_dir, host, token, public_read, allowed_hosts)
    sock = _bind(host, port)
    port = sock.getsockname()[1]
    server = _server(app, own_process=True)
    if on_ready is not None:
        on_ready(_url(host, port))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def start_for_run(service, runs_dir: str, status) -> ServerHandle | None:
    """The status/control API over every run in `runs_dir` while a training run is active
    (`service`: the recipe's section; None when it is off). Its URL goes into the run's status."""
    if not service.enabled:
        return None
    token = resolve_token(service.token_env, service.token_file)
    server = start_in_thread(runs_dir, service.host, service.port, token, public_read=service.public_read,
                             allowed_hosts=service.allowed_hosts)
    status.update(service_url=server.url)
    print(f"[rlvr] status API and dashboard: {server.url}/"
          + ("" if token else f" (control endpoints off: set {service.token_env} or service.token_file)"), flush=True)
    return server
