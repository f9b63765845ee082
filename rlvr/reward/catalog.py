"""What `rlvr rewards list` shows of each installed verifier: its target, package, kind
(plain / batched / async) and options (read from its constructor's signature).

Listing imports each verifier module (the kind and options need the object); one that
fails to import is listed with kind `?` and the error, never stopping the listing.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass


@dataclass
class VerifierInfo:
    name: str
    target: str
    package: str  # "dist version", or "?" for a literal path
    kind: str = "?"
    options: str = ""
    error: str = ""


def kind_of(obj) -> str:
    """"plain", "batched", "async" or "batched, async" for a verifier function or class.

    >>> class Judge:
    ...     batched = True
    ...     async def __call__(self, samples): return [1.0] * len(samples)
    >>> def exact(sample): return 1.0
    >>> kind_of(Judge), kind_of(exact)
    ('batched, async', 'plain')
    """
    fn = obj.__call__ if isinstance(obj, type) else obj
    kinds = [k for k, on in (("batched", getattr(obj, "batched", False) is True),
                             ("async", inspect.iscoroutinefunction(fn))) if on]
    return ", ".join(kinds) or "plain"


def options_of(obj) -> str:
    """A class verifier's options as `name=default` (`name` alone when required); "" for a function.

    >>> class ExactMatch:
    ...     def __init__(self, *, strip: bool = True, max_length: int, **extra): pass
    >>> options_of(ExactMatch)
    'strip=True, max_length, **extra'
    """
    if not isinstance(obj, type):
        return ""
    try:
        params = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return "?"
    out = []
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            out.append(f"**{p.name}")
        else:
            out.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return ", ".join(out)


def describe(name: str, target: str, package: str) -> VerifierInfo:
    """Import the verifier `target` and describe it (an import error goes in `error`)."""
    from rlvr.plugins import REWARDS, target_object

    info = VerifierInfo(name, target, package)
    try:
        obj = target_object(target, REWARDS, "verifier")
        info.kind, info.options = kind_of(obj), options_of(obj)
    except Exception as e:  # noqa: BLE001 - a broken plugin is listed, not fatal
        info.error = f"{type(e).__name__}: {e}"
    return info


def installed() -> list[tuple[str, str, str]]:
    """(name, target, "package version") of every registered verifier, sorted."""
    from importlib.metadata import entry_points

    from rlvr.plugins import REWARDS

    return sorted({(ep.name, ep.value, f"{ep.dist.name} {ep.dist.version}" if ep.dist else "?")
                   for ep in entry_points(group=REWARDS)})


def format_list(infos: list[VerifierInfo]) -> str:
    """A table: name, target, package, kind, options (an import error in place of the options)."""
    header = VerifierInfo("name", "target", "package", "kind", "options")
    rows = [header] + infos
    cols = [[r.name for r in rows], [r.target for r in rows], [r.package for r in rows], [r.kind for r in rows]]
    widths = [max(len(c) for c in col) for col in cols]
    lines = []
    for i, r in enumerate(rows):
        cells = [col[i].ljust(w) for col, w in zip(cols, widths)]
        lines.append("  ".join(cells + [f"error: {r.error}" if r.error else r.options]).rstrip())
    return "\n".join(lines)
