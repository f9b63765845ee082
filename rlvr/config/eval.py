"""The `eval` section: the held-out evaluation during training, and named eval sets.

    eval:
      every: 10
      sets:
        - {name: gsm8k, path: data/gsm8k_test.jsonl, num_prompts: 200}   # greedy
        - {name: aime, path: data/aime.jsonl, n: 8, temperature: 0.6, max_tokens: 4096,
           verifiers: [{name: math}, {name: format, require_think: true}]}

Each `eval.sets` item is parsed into an `EvalSetItem` (see `rlvr.eval.sets`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, List, Optional

from rlvr.config.checks import require
from rlvr.config.data import source_problem, split_count
from rlvr.config.reward import VerifierItem, check_verifier_names

SET_KEYS = ("name", "path", "num_prompts", "verifiers", "n", "temperature", "max_tokens")
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class EvalSetItem:
    """One named eval set. `verifiers` None: the training verifiers and reward workers.
    `temperature` None: greedy for one sample per prompt, 1.0 for several."""

    name: str
    path: str
    num_prompts: Optional[int] = None  # None: eval.num_prompts
    verifiers: Optional[list] = None
    n: int = 1
    temperature: Optional[float] = None
    max_tokens: Optional[int] = None  # None: eval.max_tokens, else rollout.max_tokens

    @staticmethod
    def parse(sets: list) -> list["EvalSetItem"]:
        """Typed items of `eval.sets`; the first problem raises RecipeError naming its key."""
        out, seen = [], set()
        for i, s in enumerate(sets):
            key = f"eval.sets[{i}]"
            require(isinstance(s, dict) and {"name", "path"} <= set(s), key, "needs at least {name, path}")
            require(not set(s) - set(SET_KEYS), key, f"unknown keys {sorted(set(s) - set(SET_KEYS))} (have {sorted(SET_KEYS)})")
            require(bool(NAME.match(str(s["name"]))) and s["name"] not in seen, f"{key}.name",
                    f"must be unique and made of letters, digits, _ . - (got {s['name']!r})")
            seen.add(s["name"])
            problem = source_problem(split_count(str(s["path"]))[0])
            require(problem is None, f"{key}.path", problem or "")
            for k in ("num_prompts", "n", "max_tokens"):
                require(k not in s or (isinstance(s[k], int) and not isinstance(s[k], bool) and s[k] >= 1),
                        f"{key}.{k}", "must be an integer >= 1")
            require("temperature" not in s or (isinstance(s["temperature"], (int, float)) and s["temperature"] >= 0),
                    f"{key}.temperature", "must be >= 0")
            require(not (s.get("n", 1) > 1 and s.get("temperature", 1.0) == 0), f"{key}.temperature",
                    "must be > 0 when n > 1 (greedy samples would all be the same)")
            require("verifiers" not in s or (isinstance(s["verifiers"], list) and bool(s["verifiers"])),
                    f"{key}.verifiers", "must be a non-empty list like reward.verifiers")
            verifiers = [dict(v) for v in s["verifiers"]] if "verifiers" in s else None
            if verifiers is not None:
                check_verifier_names(VerifierItem.parse(verifiers, f"{key}.verifiers"), f"{key}.verifiers")
            out.append(EvalSetItem(str(s["name"]), str(s["path"]), s.get("num_prompts"), verifiers, s.get("n", 1),
                                   s.get("temperature"), s.get("max_tokens")))
        return out


@dataclass
class EvalConfig:
    every: int = 10  # steps between held-out evaluations (0: only at start and end)
    num_prompts: int = 500
    max_tokens: Optional[int] = None  # default: rollout.max_tokens
    accuracy_verifier: Optional[str] = None  # its score >= 1 counts as correct; default: the first verifier
    # named eval sets, each {name, path, num_prompts, verifiers, n, temperature, max_tokens} (EvalSetItem)
    sets: List[Any] = field(default_factory=list)

    def set_items(self) -> list[EvalSetItem]:
        return EvalSetItem.parse(list(self.sets))

    def check(self) -> None:
        self.set_items()
        require(self.every >= 0, "eval.every", "must be >= 0")
        require(self.num_prompts >= 0, "eval.num_prompts", "must be >= 0")
