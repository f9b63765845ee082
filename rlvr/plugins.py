"""Plugin registry: names in a recipe -> importable "module:attr" targets.

A recipe names a plugin either by a registered name (`math`, `format`, or one a plugin
package registers in the plugin kind's entry-point group) or by a literal
"package.module:attr" path. Built-ins are registered exactly like plugins (see
pyproject.toml), so there is one lookup path and no special case beside it. Kinds (their
entry-point groups): verifiers, `rlvr.rewards`; tools, `rlvr.tools`; environments, `rlvr.envs`;
agents, `rlvr.agents`.

`resolve_verifier_name` runs during recipe validation, which must stay well under a
second, so it reads package metadata only and never imports the plugin module: a typo in
a literal path's module therefore surfaces when the plugin is loaded (`load_verifier`, in
the reward worker), with the import error. This module imports nothing of rlvr's.
"""

from __future__ import annotations

import difflib
import importlib
import re
from importlib.metadata import entry_points

REWARDS = "rlvr.rewards"  # the entry-point group of verifiers
TOOLS = "rlvr.tools"  # tools a model calls in multi-turn episodes
ENVS = "rlvr.envs"  # environments that run multi-turn episodes
AGENTS = "rlvr.agents"  # agents trained through the OpenAI-compatible endpoint (`rollout.agent`)

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_TARGET = re.compile(rf"{_DOTTED}:{_DOTTED}")


def known(group: str) -> list[str]:
    """Names registered in the entry-point `group`, sorted."""
    return sorted({ep.name for ep in entry_points(group=group)})


def resolve(name: str, group: str, kind: str = "plugin") -> str:
    """The "module:attr" target of `name` in `group`, without importing it. Raises LookupError
    (one line) for an unknown name, a malformed path, or a name two installed packages register."""
    if ":" in name:
        if not _TARGET.fullmatch(name):
            raise LookupError(f"{kind} {name!r} is not a valid 'package.module:attr' path")
        return name
    targets: dict[str, str] = {}  # distribution name -> target
    for ep in entry_points(group=group, name=name):
        dist = ep.dist.name if ep.dist is not None else "?"
        targets.setdefault(dist, ep.value)
    if not targets:
        raise LookupError(unknown_message(name, known(group), kind))
    if len(targets) > 1:
        owners = "; ".join(f"package {dist!r} -> {value}" for dist, value in sorted(targets.items()))
        raise LookupError(f"{kind} {name!r} is registered by several packages ({owners}); "
                          f"uninstall one or name the {kind} by its 'package.module:attr' path")
    return next(iter(targets.values()))


def did_you_mean(name: str, names: list[str]) -> str:
    """The suffix ` (did you mean 'x'?)` naming the registered name closest to a mistyped one, else "".

    >>> did_you_mean("maht", ["code", "format", "math"])
    " (did you mean 'math'?)"
    >>> did_you_mean("exact-match", ["exact_match", "format"]), did_you_mean("zzz", ["math"])
    (" (did you mean 'exact_match'?)", '')
    """
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_message(name: str, names: list[str], kind: str = "plugin") -> str:
    """The one-line error for a name nothing registers: a suggestion, then every registered name.

    >>> unknown_message("fromat", ["format", "math"], "verifier")
    "unknown verifier 'fromat' (did you mean 'format'?); registered: format, math; or give a 'package.module:attr' path"
    """
    return (f"unknown {kind} {name!r}{did_you_mean(name, names)}; registered: {', '.join(names) or 'none installed'}; "
            f"or give a 'package.module:attr' path")


def target_object(name: str, group: str, kind: str = "plugin"):
    """Import the object `name` (a registered name or a "module:attr" path) stands for."""
    target = resolve(name, group, kind)
    module_name, attr = target.split(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def build(obj, options: dict | None, name: str, kind: str = "plugin"):
    """A plugin from its object: a class is called with `**options`; a plain function is
    returned as-is and takes no options."""
    options = dict(options or {})
    if isinstance(obj, type):
        return obj(**options)
    if not callable(obj):
        raise TypeError(f"{kind} {name!r} is a {type(obj).__name__}, not a class or function")
    if options:
        raise TypeError(f"{kind} {name!r} is a plain function and takes no options, got {', '.join(sorted(options))}")
    return obj


def load(name: str, options: dict | None, group: str, kind: str = "plugin"):
    """Import and build a plugin (`target_object`, then `build`)."""
    return build(target_object(name, group, kind), options, name, kind)


def known_verifiers() -> list[str]:
    """Registered verifier names, sorted."""
    return known(REWARDS)


def resolve_verifier_name(name: str) -> str:
    """The "module:attr" target of a verifier name (see `resolve`).

    >>> resolve_verifier_name("math")
    'rlvr.reward.builtin.math:MathVerifier'
    >>> resolve_verifier_name("my_pkg.checks:exact")
    'my_pkg.checks:exact'
    """
    return resolve(name, REWARDS, "verifier")


def load_verifier(name: str, options: dict | None = None):
    """A verifier, built with its options (see `load`).

    >>> verify = load_verifier("format", {"require_think": False, "pattern": "[0-9]+"})
    >>> type(verify).__name__
    'FormatVerifier'
    """
    return load(name, options, REWARDS, "verifier")


def resolve_tool_name(name: str) -> str:
    """The "module:attr" target of a tool name.

    >>> resolve_tool_name("calc")
    'rlvr.tools.builtin:Calc'
    """
    return resolve(name, TOOLS, "tool")


def resolve_env_name(name: str) -> str:
    """The "module:attr" target of an environment name.

    >>> resolve_env_name("tools")
    'rlvr.tools.env:ToolEnv'
    """
    return resolve(name, ENVS, "environment")



def resolve_agent_name(name: str) -> str:
    """The "module:attr" target of an agent (`rollout.agent`): a registered name or a path.

    >>> resolve_agent_name("my_pkg.agent:rollout")
    'my_pkg.agent:rollout'
    """
    return resolve(name, AGENTS, "agent")
