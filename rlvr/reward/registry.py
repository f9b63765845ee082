"""Verifier registry: names in a recipe -> importable "module:attr" targets.

A recipe names a verifier either by a registered name (`math`, `format`, or one a
plugin package registers in the entry-point group `rlvr.rewards`) or by a literal
"package.module:attr" path. Built-ins are registered exactly like plugins (see
pyproject.toml), so there is one lookup path and no special case beside it.

`resolve_verifier_name` runs during recipe validation, which must stay well under a
second, so it reads package metadata only and never imports the verifier module:
a typo in a literal path's module therefore surfaces when the reward worker
starts (`load_verifier`), with the import error.
"""

from __future__ import annotations

import importlib
import re
from importlib.metadata import entry_points

GROUP = "rlvr.rewards"

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_TARGET = re.compile(rf"{_DOTTED}:{_DOTTED}")


def known_verifiers() -> list[str]:
    """Registered verifier names, sorted."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def resolve_verifier_name(name: str) -> str:
    """Return the "module:attr" target of a verifier name, without importing it.

    Raises LookupError (one line) for an unknown name, a malformed path, or a name
    that two installed packages both register.

    >>> resolve_verifier_name("math")
    'rewards.math:MathVerifier'
    >>> resolve_verifier_name("my_pkg.checks:exact")
    'my_pkg.checks:exact'
    """
    if ":" in name:
        if not _TARGET.fullmatch(name):
            raise LookupError(f"verifier {name!r} is not a valid 'package.module:attr' path")
        return name
    targets: dict[str, str] = {}  # distribution name -> target
    for ep in entry_points(group=GROUP, name=name):
        dist = ep.dist.name if ep.dist is not None else "?"
        targets.setdefault(dist, ep.value)
    if not targets:
        known = ", ".join(known_verifiers()) or "none installed"
        raise LookupError(f"unknown verifier {name!r} (registered: {known}; or give a 'package.module:attr' path)")
    if len(targets) > 1:
        owners = "; ".join(f"package {dist!r} -> {value}" for dist, value in sorted(targets.items()))
        raise LookupError(f"verifier {name!r} is registered by several packages ({owners}); "
                          "uninstall one or name the verifier by its 'package.module:attr' path")
    return next(iter(targets.values()))


def load_verifier(name: str, options: dict | None = None):
    """Import and build a verifier: a class is called with `**options`; a plain
    function is returned as-is and takes no options.

    >>> verify = load_verifier("format", {"require_think": False, "pattern": "[0-9]+"})
    >>> type(verify).__name__
    'FormatVerifier'
    """
    options = dict(options or {})
    target = resolve_verifier_name(name)
    module_name, attr = target.split(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, type):
        return obj(**options)
    if not callable(obj):
        raise TypeError(f"verifier {name!r} ({target}) is a {type(obj).__name__}, not a class or function")
    if options:
        raise TypeError(f"verifier {name!r} ({target}) is a plain function and takes no options, "
                        f"got {', '.join(sorted(options))}")
    return obj
