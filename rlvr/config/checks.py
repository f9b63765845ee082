"""`RecipeError` and the two helpers every section's `check()` is written with.

Every problem names the dotted key at fault (`rollout.n`, `reward.verifiers[1].name`),
so the CLI can print it as one line (exit code 2) before anything is started.
"""

from __future__ import annotations


class RecipeError(ValueError):
    """A recipe problem, always naming the dotted key (or path) at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def require(ok: bool, key: str, message: str) -> None:
    """Raise `RecipeError(key, message)` unless `ok`.

    >>> require(True, "x", "never raised")
    >>> require(1 > 2, "trainer.lr", "must be > 0")
    Traceback (most recent call last):
    ...
    rlvr.config.checks.RecipeError: trainer.lr: must be > 0
    """
    if not ok:
        raise RecipeError(key, message)


def one_of(value, key: str, choices) -> None:
    """Raise unless `value` is one of `choices` (listed in their order in the message)."""
    require(value in choices, key, f"must be one of {list(choices)}, got {value!r}")


def check_env_names(names, where: str) -> None:
    """A list of environment variable names (what a plugin's child process may see)."""
    require(isinstance(names, (list, tuple)) and all(isinstance(n, str) and n and "=" not in n for n in names),
            where, f"must be a list of environment variable names, got {names!r}")
