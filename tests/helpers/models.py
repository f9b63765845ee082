"""The cached tiny models the tests share (`tests/conftest.py`'s fixtures), and their build in a
background process while the first tests run.

Building them is a good part of a clean CI run (2-core CPU, 2026-12-05: the warm model ~50 s,
the tool-calling model ~72 s, the reward model ~40 s of SFT), and the unit tests that run
first leave one core mostly idle. So when the collected tests need them, `start_prebuild`
starts `python -m tests.helpers.models NAME ...`, which builds them in that order; a fixture
that needs a model meanwhile waits on its build lock (`rlvr.run.files.build_once`) and then
finds it built, the same folder it would have built itself.
"""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("RLVR_TEST_CACHE", os.path.join(REPO, ".cache", "rlvr"))
ORDER = ("warm_model_dir", "reward_model_dir", "tools_model_dir")  # the fixtures' names; the RM needs the warm model


def warm_model() -> str:
    """The default built-in model (SFT warm start)."""
    from rlvr.config import ArithmeticConfig, ModelConfig
    from rlvr.models.tiny import ensure_tiny_model

    return ensure_tiny_model(ModelConfig(cache_dir=CACHE), ArithmeticConfig(), progress=False)


def reward_model() -> str:
    """A tiny sequence-classification reward model on the warm model's backbone (`rlvr.models.tiny_rm`)."""
    from rlvr.models.tiny_rm import ensure_tiny_reward_model

    return ensure_tiny_reward_model(warm_model(), CACHE)


def tools_model() -> str:
    """The built-in tool-calling model as recipes/tiny-tools-cpu.yaml builds it (`builtin:tiny-tools`)."""
    from rlvr.config import load_recipe
    from rlvr.models.tiny_tools import ensure_tiny_tools_model

    cfg = load_recipe(os.path.join(REPO, "recipes", "tiny-tools-cpu.yaml"), [f"model.cache_dir={CACHE}"])
    return ensure_tiny_tools_model(cfg.model, cfg.data.tool_arithmetic, progress=False)


BUILDERS = {"warm_model_dir": warm_model, "reward_model_dir": reward_model, "tools_model_dir": tools_model}


def start_prebuild(fixture_names: set[str]) -> subprocess.Popen | None:
    """Start building, in a background process, the models behind `fixture_names` (those of
    the collected tests); None when none is needed. Its output goes to CACHE/prebuild.log."""
    names = [n for n in ORDER if n in fixture_names]
    if not names:
        return None
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, "prebuild.log"), "w") as log:
        return subprocess.Popen([sys.executable, "-m", "tests.helpers.models", *names], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": REPO})


def stop_prebuild(proc: subprocess.Popen | None) -> None:
    """End the background build if it still runs (a half-built folder has no marker: built again next time)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(name, BUILDERS[name](), flush=True)
