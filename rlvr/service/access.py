"""Who may talk to the status service: the Host-header allow-list and the bearer token.

Two guards, one pure ASGI middleware (`AccessGuard`), stdlib only:

  * Host allow-list (against DNS rebinding: a web page whose name resolves to 127.0.0.1
    reads the API in a visitor's browser unless the server checks the name it was reached
    by). Allowed: the bound host, localhost, 127.0.0.1 and ::1 (any port); for a wildcard
    bind (0.0.0.0, ::) also this machine's hostname; plus `service.allowed_hosts`
    (`"*"`: any). Another Host, or none, is answered 400 with a one-line JSON error.
  * Reads. On a loopback bind reads are open (only this machine can connect). On any other
    address every request needs `Authorization: Bearer <token>` except the ones in
    `OPEN_PATHS` (health check, the dashboard's static page, the API description), unless
    `service.public_read` is true. Such a bind with no token and no public_read is refused
    (`read_policy` raises): it would serve every run to the network.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
# paths answered without the token even when reads need it: nothing about any run
OPEN_PATHS = ("/healthz", "/", "/favicon.ico", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
OPEN_PREFIXES = ("/static/",)


class ServiceRefused(ValueError):
    """A service configuration that must not start (it would serve runs to anyone)."""


def is_loopback(host: str) -> bool:
    """A bind address only this machine can reach.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "127.0.0.2", "0.0.0.0", "10.1.2.3", "box")]
    [True, True, True, True, False, False, False]
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_policy(host: str, token: str | None, public_read: bool) -> tuple[bool, str | None]:
    """(reads need the token, a warning line to print or None) for a server bound to `host`;
    ServiceRefused for a non-loopback bind with neither a token nor public_read."""
    if is_loopback(host):
        return False, None
    if public_read:
        return False, (f"[rlvr] warning: the status service listens on {host or '*'} with service.public_read: "
                       "anyone who can reach it can read every run's status, metrics, samples and recipe")
    if token is None:
        raise ServiceRefused(
            f"the status service would listen on {host or '*'} (not loopback) without a token: set RLVR_TOKEN "
            "(or service.token_env / service.token_file, `rlvr serve --token-file F`) so reads and control need "
            "it, or set service.public_read: true (`rlvr serve --public-read`) to open reads to anyone")
    return True, None


def host_name(header: str) -> str:
    """The name of a Host header, without its port, lower case.

    >>> [host_name(h) for h in ("LocalHost:8777", "[::1]:80", "[::1]", "10.0.0.1", "a.b.:9")]
    ['localhost', '::1', '::1', '10.0.0.1', 'a.b']
    """
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") > 1:  # a bare IPv6 address (not valid in Host, but unambiguous)
        return header
    return header.partition(":")[0].rstrip(".")


def allowed_host_names(bound_host: str, extra=()) -> frozenset[str]:
    """The Host names a server bound to `bound_host` answers ("*" in the set: any)."""
    names = {*LOOPBACK_NAMES, *(host_name(h) if h != "*" else "*" for h in extra)}
    if bound_host in WILDCARDS:
        names.add(socket.gethostname().lower())
    else:
        names.add(host_name(bound_host if ":" not in bound_host else f"[{bound_host.strip('[]')}]"))
    return frozenset(names)


def token_matches(expected: str, authorization: str | None) -> bool:
    """`authorization` is `Bearer <expected>` (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class AccessGuard:
    """ASGI middleware: the Host allow-list for every HTTP request, then the token for every
    path outside OPEN_PATHS when `reads_need_token` (control routes check it again themselves)."""

    def __init__(self, app, allowed_hosts: frozenset[str], token: str | None, reads_need_token: bool):
        self.app, self.allowed_hosts = app, allowed_hosts
        self.token, self.reads_need_token = token, reads_need_token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = host_name(headers.get("host", ""))
        if "*" not in self.allowed_hosts and host not in self.allowed_hosts:
            detail = (f"Host {host[:100]!r} is not allowed here: add it to service.allowed_hosts "
                      "(rlvr serve --allowed-host NAME)")
            return await _reply(send, 400, detail)
        if self.reads_need_token and not _is_open(scope.get("path", "")):
            if self.token is None or not token_matches(self.token, headers.get("authorization")):
                return await _reply(send, 401, "this server needs the token for reads: send "
                                    "`Authorization: Bearer <token>`", [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


async def _reply(send, status: int, detail: str, headers=()) -> None:
    body = json.dumps({"detail": detail}).encode() + b"\n"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
