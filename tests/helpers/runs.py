"""Short training runs of the default recipe through the real stack, and what tests read back
from their run folders."""

from __future__ import annotations

import json
import os

import torch

from rlvr.config import load_recipe
from rlvr.run.metrics import read_metrics
from tests.helpers.models import CACHE, REPO

RECIPE = os.path.join(REPO, "recipes", "tiny-cpu.yaml")
TOOLS_RECIPE = os.path.join(REPO, "recipes", "tiny-tools-cpu.yaml")


def run_short(tmp_path, name: str, overrides: list[str], recipe: str = RECIPE) -> dict:
    """`rlvr train` of a recipe (the default one unless told) in this process (the tests' Ray cluster), quiet."""
    from rlvr.loop.train import train

    cfg = load_recipe(recipe, [f"run.output_dir={tmp_path}", f"run.name={name}", f"model.cache_dir={CACHE}",
                               "logging.progress=false", *overrides])
    return train(cfg)


def read_status(run_dir: str) -> dict:
    try:
        with open(os.path.join(run_dir, "status.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def expected_prompts(cfg_overrides: list[str], steps: int, model_dir: str) -> list[list[str]]:
    """The prompts the sampler prescribes for steps 1..steps (what an undisturbed run draws)."""
    from transformers import AutoTokenizer

    from rlvr.data.prompts import PromptSampler, load_train_and_eval

    cfg = load_recipe(RECIPE, cfg_overrides)
    train, _ = load_train_and_eval(cfg.data, AutoTokenizer.from_pretrained(model_dir))
    sampler = PromptSampler(len(train), cfg.run.seed)
    return [[train[i].text for i in sampler.next_batch(cfg.data.prompts_per_step)] for _ in range(steps)]


def step_prompts(run_dir: str, step: int, n: int) -> list[str]:
    """The distinct prompts of a step, in order, from its sample records (all samples kept)."""
    with open(os.path.join(run_dir, "samples", f"step_{step:06d}.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [row["prompt"] for row in rows[::n]]


def step_samples(run_dir: str, step: int) -> list[tuple[str, str]]:
    """(prompt, completion) of every sample record of a step."""
    with open(os.path.join(run_dir, "samples", f"step_{step:06d}.jsonl")) as f:
        return [(row["prompt"], row["completion"]) for row in map(json.loads, f)]


def eval_file(tmp_path, count: int) -> str:
    """The built-in task's held-out prompts (the ones training evaluates on) as a JSONL file."""
    from rlvr.config import ArithmeticConfig
    from rlvr.data.rows import arithmetic_rows

    path = str(tmp_path / "held_out.jsonl")
    with open(path, "w") as f:
        for row in arithmetic_rows(ArithmeticConfig(), "eval")[:count]:
            f.write(json.dumps({"prompt": row["prompt"], "answer": row["answer"]}) + "\n")
    return path


def rlvr_eval(model: str, data_path: str, out) -> float:
    """`rlvr eval` as users run it (greedy, fp32); returns the accuracy it reports."""
    import subprocess
    import sys

    rlvr = os.path.join(os.path.dirname(sys.executable), "rlvr")
    proc = subprocess.run([rlvr, "eval", model, "--data", data_path, "--max-tokens", "6", "--dtype", "float32",
                           "--no-progress", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(str(out), "summary.json")) as f:
        return json.load(f)["accuracy"]


def assert_learned(summary: dict, min_gain: float) -> None:
    rows = read_metrics(summary["run_dir"])
    evals = [(r["step"], r["eval/accuracy"]) for r in rows if r.get("eval/accuracy") is not None]
    start, final = evals[0][1], evals[-1][1]
    print("eval/accuracy by step:", evals)
    assert evals[0][0] == 0 and len(evals) >= 2
    assert final - start >= min_gain, f"held-out accuracy {start:.3f} -> {final:.3f} (needed +{min_gain})"
    required = {"step", "reward/mean", "reward/std", "response_length/mean", "loss", "grad_norm",
                "timing/generate", "timing/reward", "timing/train", "timing/sync", "timing/step", "tokens/generated"}
    assert all(required <= set(r) for r in rows[1:]), "every step logs the documented metrics"


def assert_every_parameter_changed(summary: dict, start_dir: str) -> None:
    from safetensors.torch import load_file

    start = load_file(os.path.join(start_dir, "model.safetensors"))
    final = load_file(os.path.join(summary["checkpoint"], "model.safetensors"))
    assert set(start) == set(final)
    unchanged = [k for k in start if torch.equal(start[k], final[k])]
    assert not unchanged, f"parameters that never moved: {unchanged}"


class BackgroundRun:
    """`run_short` in a thread, so that a test can kill processes of the run while it trains."""

    def __init__(self, tmp_path, name: str, overrides: list[str]):
        import threading

        self.run_dir = os.path.join(tmp_path, name)
        self.result: dict = {}

        def train():
            try:
                self.result["summary"] = run_short(tmp_path, name, overrides)
            except BaseException as e:  # noqa: BLE001 - the test reads it
                self.result["error"] = e

        self.thread = threading.Thread(target=train, daemon=True)
        self.thread.start()

    def wait_until(self, condition, what: str) -> dict:
        """The run's status once `condition(status)` holds (the run must not have failed before)."""
        from tests.helpers.procs import wait_for

        def check():
            assert "error" not in self.result, self.result.get("error")
            status = read_status(self.run_dir)
            return status if condition(status) else None

        return wait_for(check, what)

    def wait_in(self, step: int, phase: str) -> dict:
        """The status while step `step` is in `phase`."""
        return self.wait_until(lambda s: s.get("step") == step - 1 and s.get("phase") == phase,
                               f"step {step} in {phase}")

    def join(self, timeout_s: float = 600) -> dict:
        """The run's result: {"summary": ...} or {"error": ...}."""
        self.thread.join(timeout=timeout_s)
        return self.result


ACTOR_NOISE = ("(VLLMEngine", "(TrainerWorker", "(RewardWorker", "arg_utils.py", "Triton", "torch_dtype")


def console_noise(out: str, strict: bool = True) -> list[str]:
    """The lines of a driver's console that are not rlvr's: the actors' output, and with
    `strict` any Python/vLLM/Ray logging line (`WARNING`/`INFO`): a quiet console has none."""
    levels = ("WARNING", " INFO ", "INFO:", "UserWarning", "FutureWarning", "DeprecationWarning")
    return [line for line in out.splitlines()
            if any(n in line for n in ACTOR_NOISE) or (strict and any(n in line for n in levels))]


class DriverProcess:
    """`rlvr train` of the default recipe as a user runs it: its own process and its own private
    Ray cluster (found again by its temp dir, to clean up after a kill)."""

    def __init__(self, tmp_path, name: str, overrides: list[str]):
        import sys
        import tempfile

        self.temp_dir = tempfile.mkdtemp(prefix=f"rlvr-{name}-", dir="/tmp")
        self.run_dir = os.path.join(tmp_path, name)
        self.args = ["recipes/tiny-cpu.yaml", f"run.output_dir={tmp_path}", f"run.name={name}",
                     f"model.cache_dir={CACHE}", "logging.progress=false", "logging.plots=false",
                     f"cluster.temp_dir={self.temp_dir}", *overrides]
        self.cmd = [sys.executable, "-m", "rlvr.cli", "train", *self.args]
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def start(self, extra: list[str] = (), **popen):
        import subprocess

        return subprocess.Popen(self.cmd + list(extra), cwd=REPO, env=self.env, **popen)

    def kill_after_step(self, step: int) -> None:
        """Run until `step` is done, then SIGKILL the driver (and its cluster)."""
        import signal
        import subprocess

        from tests.helpers.procs import kill_processes_of, wait_for

        driver = self.start(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for(lambda: read_status(self.run_dir).get("step", 0) >= step, f"step {step}", timeout_s=400)
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        finally:
            kill_processes_of(self.temp_dir)  # the dead driver's private Ray cluster

    def cleanup(self) -> None:
        from tests.helpers.procs import kill_processes_of

        kill_processes_of(self.temp_dir)
