"""Plugin options checked before anything starts: every verifier (`reward.verifiers`, each eval
set's `verifiers`) and, for multi-turn recipes, every tool and the environment is built once
with its options in ONE short-lived child process (`rlvr.cluster.isolated`, the machinery the
reward and tool workers run plugins in), under a timeout. `rlvr validate` and `rlvr train`
(before any actor) run it, so a typo in an option is one line naming its key and exit code 2,
not an actor's traceback after the cluster has started.

What is caught, per plugin, in this order:
- the plugin cannot be imported (a typo in a `module:attr` path): `<item>.name`;
- an option its constructor does not take (signature binding; a plain function takes none):
  `<item>.<option>`, with the options it does take and the closest one;
- its constructor raises (the built-ins check their options' types and ranges there, as a
  plugin should): `<item>.<option>` when the message names exactly one of the given
  options, else `<item>`, with the plugin's message.
Plugins are built, never called: a call could reach an LLM judge, a remote service or a
sandbox, and a dummy sample proves little about a real one.

Cost: one child start (the plugins' imports: ~0.6 s with `math`, which imports sympy).
"""

from __future__ import annotations

import difflib
import inspect
import re

from rlvr.cluster.isolated import IsolatedChild, serve
from rlvr.config.checks import RecipeError

CHECK_TIMEOUT_S = 60.0  # importing and building every plugin, on a loaded machine


class PluginCheck(IsolatedChild):
    """The child that builds the plugins; its ready info is the list of problems found."""

    entry = "rlvr.cluster.plugin_check:_child_main"
    label = "plugin check"
    what = "plugin check process"
    plugins = "the plugins to check their options"
    startup_timeout_s = CHECK_TIMEOUT_S


def plugin_specs(cfg) -> list[tuple[str, str, str, str, dict]]:
    """(item key, entry-point group, kind, name, options) of every plugin the recipe builds."""
    from rlvr.config.reward import VerifierItem
    from rlvr.plugins import ENVS, REWARDS, TOOLS

    specs = [(f"reward.verifiers[{i}]", REWARDS, "verifier", v.name, v.options)
             for i, v in enumerate(cfg.reward.items())]
    for i, s in enumerate(cfg.eval.set_items()):
        items = VerifierItem.parse(s.verifiers, f"eval.sets[{i}].verifiers") if s.verifiers else []
        specs += [(f"eval.sets[{i}].verifiers[{j}]", REWARDS, "verifier", v.name, v.options)
                  for j, v in enumerate(items)]
    mt = cfg.rollout.multi_turn
    if mt.enabled:
        from rlvr.config.rollout import ToolItem

        specs += [(f"rollout.multi_turn.tools[{i}]", TOOLS, "tool", t.name, t.options)
                  for i, t in enumerate(ToolItem.parse(list(mt.tools)))]
        specs.append(("rollout.multi_turn.env_options", ENVS, "environment", mt.env, dict(mt.env_options)))
    return specs


def check_plugin_options(cfg) -> None:
    """Raise `RecipeError` (one line, naming the key) for the first plugin of the recipe that
    cannot be built with its options (see the module doc)."""
    specs = plugin_specs(cfg)
    try:
        child = PluginCheck(specs)
    except RuntimeError as e:  # timed out, or the child died (a plugin's import killed it)
        raise RecipeError(specs[0][0].rpartition("[")[0] or "reward.verifiers",
                          f"the plugins could not be built to check their options: {e}") from None
    try:
        problems = child.ready_info
    finally:
        child.shutdown()
    if problems:
        key, message = problems[0]
        raise RecipeError(key, message)


# ---- the child's side ----


def _child_main() -> None:
    serve(_check_all, _no_work)


def _no_work(state, payload, send) -> None:  # the check is done at setup; no task is ever sent
    return None


def _check_all(specs) -> tuple[None, list[tuple[str, str]]]:
    problems = []
    for where, group, kind, name, options in specs:
        problem = plugin_problem(where, group, kind, name, options)
        if problem is not None:
            problems.append(problem)
    return None, problems


def plugin_problem(where: str, group: str, kind: str, name: str, options: dict) -> tuple[str, str] | None:
    """(the key at fault, one line saying why) when the plugin `name` cannot be built with `options`."""
    from rlvr.plugins import build, target_object

    try:
        obj = target_object(name, group, kind)
    except BaseException as e:  # an import error, or whatever the module raises at import
        key = "rollout.multi_turn.env" if kind == "environment" else f"{where}.name"
        return key, f"cannot import {kind} {name!r}: {_one_line(e)}"
    unknown = unknown_option(obj, options)
    if unknown is not None:
        return f"{where}.{unknown[0]}", f"{kind} {name!r} has no option {unknown[0]!r} ({unknown[1]})"
    try:
        build(obj, options, name, kind)
    except BaseException as e:  # noqa: BLE001 - the plugin's own check, whatever it raises
        option = named_option(str(e), options)
        return (f"{where}.{option}" if option else where), f"{kind} {name!r}: {_one_line(e)}"
    return None


def unknown_option(obj, options: dict) -> tuple[str, str] | None:
    """(the first option `obj`'s constructor does not take, what it does take), or None.

    >>> class V:
    ...     def __init__(self, *, rel_tol: float = 1e-6, abs_tol: float = 0.0): ...
    >>> unknown_option(V, {"rel_tl": 1}), unknown_option(V, {"rel_tol": "lots"})
    (('rel_tl', "it takes: rel_tol, abs_tol; did you mean 'rel_tol'?"), None)
    """
    if not options:
        return None
    if not isinstance(obj, type):
        return (sorted(options)[0], "it is a plain function and takes no options") if callable(obj) else None
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):  # no signature to read: its constructor decides
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for option in options:
        if option not in names:
            close = difflib.get_close_matches(option, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return option, f"it takes: {', '.join(names) or 'none'}{hint}"
    return None


def named_option(message: str, options: dict) -> str | None:
    """The one option of `options` that `message` names as a word, else None.

    >>> named_option("math verifier: option correct_score must be a number", {"correct_score": "x", "fast_path": 1})
    'correct_score'
    """
    named = [k for k in options if re.search(rf"(?<![\w.]){re.escape(str(k))}(?!\w)", message)]
    return named[0] if len(named) == 1 else None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or "(no message)"
    text = f"{type(e).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."
