"""A third-party verifier package (examples/reward-plugin) installed with pip is found by
name through its entry point, in a fresh process, and scores samples in the reward worker.

Installs into the current venv (non-editable, from a copy in tmp, so the example folder
gets no build/ or egg-info clutter); re-running reinstalls it (idempotent), offline
(--no-deps --no-build-isolation: setuptools is already installed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

PLUGIN = os.path.join(REPO, "examples", "reward-plugin")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    src = tmp_path_factory.mktemp("plugin") / "reward-plugin"
    shutil.copytree(PLUGIN, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--force-reinstall", str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _fresh_python(code: str) -> str:
    """Run code in a new interpreter outside the repo (so only the installed copy is importable)."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_entry_point_resolves_in_a_fresh_process(installed):
    out = _fresh_python("from rlvr.plugins import resolve_verifier_name, known_verifiers\n"
                        "import rlvr_example_plugin, json\n"
                        "print(json.dumps([resolve_verifier_name('exact_match'), known_verifiers(),"
                        " rlvr_example_plugin.__file__]))")
    target, names, where = json.loads(out)
    assert target == "rlvr_example_plugin:ExactMatch"
    assert {"exact_match", "math", "format"} <= set(names)
    assert "site-packages" in where  # the installed copy, not the example folder


def test_cli_lists_and_scores_the_plugin(installed):
    out = _fresh_python("from rlvr.cli.rewards import main; main(['list'])")
    assert any(line.split()[:2] == ["exact_match", "rlvr_example_plugin:ExactMatch"]
               and "rlvr-example-plugin 0.1.0" in line for line in out.splitlines())
    out = _fresh_python("from rlvr.cli.rewards import main; main(['score', 'exact_match', '--completion', "
                        "'<think>x</think> PARIS', '--answer', 'paris', '-o', 'case_sensitive=false'])")
    assert json.loads(out) == {"value": 1.0, "parts": {"has_answer": 1.0}, "failure": None}


def test_plugin_scores_in_the_reward_worker(installed):
    from rlvr.reward.worker import RewardWorker
    from rlvr.types import RewardInput

    worker = RewardWorker([{"name": "exact_match", "case_sensitive": False}, {"name": "format", "require_think": True}])
    try:
        results = worker.score([RewardInput("q", "<think>hm</think> Paris", "paris"),
                                RewardInput("q", "Lyon", "paris")])
    finally:
        worker.shutdown()
    assert [r.scores for r in results] == [{"exact_match": 1.0, "format": 1.0}, {"exact_match": 0.0, "format": 0.0}]
    assert all(not r.failures for r in results)


def test_plugin_passes_conformance(installed):
    from rlvr.reward.conformance import check_verifier, format_table

    results = check_verifier("exact_match", {"case_sensitive": False}, n_timing=5)
    assert not any(r.failed for r in results), format_table(results)


def test_a_training_step_uses_the_installed_plugin(installed, ray_cluster, warm_model_dir, tmp_path):
    """The recipe names the plugin by its registered name; the run scores with it."""
    import importlib

    from rlvr.run.metrics import read_metrics
    from tests.helpers.runs import run_short

    importlib.invalidate_caches()  # the plugin was installed after this process started
    summary = run_short(tmp_path, "plugin", ["reward.verifiers=[{name: exact_match}]", "trainer.total_steps=1",
                                             "eval.num_prompts=16", "checkpoint.save_final=false"])
    rows = read_metrics(summary["run_dir"])
    assert rows[1]["reward/exact_match/failures"] == 0.0
    assert 0.0 < rows[1]["reward/exact_match/mean"] < 1.0  # the warm model answers some, not all, right
