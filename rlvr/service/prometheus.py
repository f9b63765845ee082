"""Prometheus text exposition (format 0.0.4) of the active runs, from their status dicts.

Pure and stdlib-only, so it is testable without a server. Every numeric value in
a run's `latest_metrics` becomes a gauge named `rlvr_<key>` (characters outside
[a-zA-Z0-9_] replaced by `_`) with a `run` label; a few fixed series describe
the run itself. When two keys sanitize to the same name, the first one wins
(and the fixed series win over metrics: "step" is already `rlvr_step`).
"""

from __future__ import annotations

import math
import re

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BAD = re.compile(r"[^a-zA-Z0-9_]")
_RESERVED = ("rlvr_up", "rlvr_runs", "rlvr_run_active", "rlvr_run_paused", "rlvr_reward_failures_total")


def metric_name(key: str) -> str:
    """The Prometheus name of a metrics key.

    >>> metric_name("reward/mean"), metric_name("timing/generate"), metric_name("eval/pass@1")
    ('rlvr_reward_mean', 'rlvr_timing_generate', 'rlvr_eval_pass_1')
    """
    return "rlvr_" + _BAD.sub("_", key)


def label_value(value: str) -> str:
    r"""A label value escaped for the text format (backslash, double quote, newline).

    >>> print(label_value('a"b\\c\nd'))
    a\"b\\c\nd
    """
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _fmt(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


class _Families:
    """Samples grouped by metric name, in first-seen order, each with one TYPE and HELP."""

    def __init__(self):
        self.families: dict[str, dict] = {}

    def add(self, name: str, labels: dict, value, kind: str = "gauge", help_text: str = "",
            owner: str | None = None) -> None:
        number = _number(value)
        if number is None:
            return
        family = self.families.setdefault(name, {"kind": kind, "help": help_text, "samples": [], "owner": owner})
        if family["owner"] != owner:  # another key already sanitized to this name
            return
        key = tuple(sorted(labels.items()))
        if any(k == key for k, _ in family["samples"]):
            return
        family["samples"].append((key, number))

    def render(self) -> str:
        lines = []
        for name, family in self.families.items():
            if family["help"]:
                help_text = family["help"].replace("\\", "\\\\").replace("\n", "\\n")
                lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {family['kind']}")
            for labels, value in family["samples"]:
                text = ",".join(f'{k}="{label_value(v)}"' for k, v in labels)
                lines.append(f"{name}{{{text}}} {_fmt(value)}" if text else f"{name} {_fmt(value)}")
        return "\n".join(lines) + "\n"


def _mapping(value) -> dict:
    """A status field that should be a mapping of names (a run folder is not trusted)."""
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def exposition(statuses: list[dict], all_states: list[str]) -> str:
    """The /metrics page: `rlvr_up`, run counts by state, and per active run its gauges.

    >>> text = exposition([{"run": "r1", "state": "running", "step": 3, "total_steps": 10,
    ...                     "latest_metrics": {"reward/mean": 0.5, "step": 3, "note": "x"}}],
    ...                   ["running", "completed"])
    >>> print(text.split("# TYPE rlvr_step gauge")[1].strip().splitlines()[0])
    rlvr_step{run="r1"} 3
    >>> 'rlvr_reward_mean{run="r1"} 0.5' in text, "note" in text
    (True, False)
    """
    out = _Families()
    out.add("rlvr_up", {}, 1, help_text="the rlvr status service is up")
    counts = {state: 0 for state in all_states}
    for s in statuses:
        counts[s.get("state")] = counts.get(s.get("state"), 0) + 1
    for state, n in counts.items():
        out.add("rlvr_runs", {"state": str(state)}, n, help_text="runs in the runs folder, by state")
    fixed = {
        "rlvr_step": ("step", "last step started"),
        "rlvr_total_steps": ("total_steps", "steps the run will train"),
        "rlvr_weight_version": ("weight_version", "weight version served by the rollout engines"),
        "rlvr_heartbeat_age_seconds": ("heartbeat_age", "seconds since the run's last heartbeat"),
    }
    for s in statuses:
        if s.get("state") not in ("running", "paused"):
            continue
        run = {"run": str(s.get("run"))}
        out.add("rlvr_run_active", run, 1, help_text="1 for each running or paused run")
        out.add("rlvr_run_paused", run, s.get("state") == "paused", help_text="1 while the run is paused")
        for name, (key, help_text) in fixed.items():
            out.add(name, run, s.get(key), help_text=help_text)
        for key, count in sorted(_mapping(s.get("reward_failures")).items()):
            out.add("rlvr_reward_failures_total", {**run, "key": key}, count, kind="counter",
                    help_text="reward failures so far, by verifier/kind")
        for key, value in _mapping(s.get("latest_metrics")).items():
            name = metric_name(key)
            if name in fixed or name in _RESERVED:
                continue
            out.add(name, run, value, help_text=f"latest {key} (metrics.jsonl)", owner=key)
    return out.render()
