"""The shipped recipes: each validates as a smoke run (`rlvr validate RECIPE --smoke`), the tiny
CPU ones also as they are, and `smoke_config` keeps each recipe's structure while it replaces
the model, the devices, the sizes and the data (table-driven over recipes/)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from rlvr.config import RecipeError, load_recipe
from rlvr.config.smoke import load_smoke, model_family, smoke_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPES = sorted(glob.glob(os.path.join(REPO, "recipes", "*.yaml")))
TINY = [r for r in RECIPES if os.path.basename(r).startswith("tiny-")]
IDS = [os.path.basename(r)[:-5] for r in RECIPES]
ENV = {**os.environ, "PYTHONPATH": REPO}
REAL = {  # recipe -> (family, placement, backend, zero stage, lora rank, preset, staleness)
    "qwen3-0.6b-gsm8k-1gpu": ("qwen3", "colocate", "fsdp2", None, 0, "grpo", 0),
    "qwen3-1.7b-math-8gpu": ("qwen3", "side", "fsdp2", None, 0, "grpo", 1),
    "qwen3-8b-numinamath-zero3": ("qwen3", "colocate", "deepspeed", 3, 0, "grpo", 0),
    "qwen3-8b-lora": ("qwen3", "colocate", "fsdp2", None, 64, "dr_grpo", 0),
    "gemma-3-4b-it": ("gemma3", "colocate", "fsdp2", None, 0, "grpo", 0),
    "llama-3.2-3b": ("llama", "side", "fsdp2", None, 0, "grpo", 0),
    "dapo-qwen3-1.7b": ("qwen3", "colocate", "fsdp2", None, 0, "dapo", 0),
    "drgrpo-qwen3-1.7b": ("qwen3", "side", "fsdp2", None, 0, "dr_grpo", 0),
    "multinode-qwen3-8b": ("qwen3", "side", "deepspeed", 3, 0, "grpo", 0),
}


def test_the_table_names_every_shipped_recipe():
    assert set(IDS) == set(REAL) | {os.path.basename(r)[:-5] for r in TINY}


def test_random_family_names_are_the_matrix_families():
    from rlvr.config.model import TINY_FAMILIES
    from rlvr.models.families import FAMILIES

    assert tuple(FAMILIES) == TINY_FAMILIES


def _validate(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlvr.cli", "validate", *args, "--scan-mb", "1"], env=ENV,
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_every_recipe_validates_as_a_smoke_run_and_the_tiny_ones_as_they_are():
    """One `rlvr validate --smoke` per recipe (each is a process: ~2 s of imports), two at a time."""
    from concurrent.futures import ThreadPoolExecutor

    calls = [(recipe, "--smoke") for recipe in RECIPES] + [(recipe,) for recipe in TINY]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda args: _validate(*args), calls))
    for args, proc in zip(calls, results):
        assert proc.returncode == 0, f"{args}: {proc.stderr[-2000:]}"
        if "--smoke" in args:
            assert proc.stderr.startswith("[rlvr] smoke: ") and "total_steps: 2" in proc.stdout, args


@pytest.mark.parametrize("recipe", RECIPES, ids=IDS)
def test_smoke_keeps_the_structure_and_replaces_the_rest(recipe):
    real = load_recipe(recipe, check=False)
    cfg, lines = load_smoke(recipe)
    name = os.path.basename(recipe)[:-5]
    # kept
    assert cfg.cluster.placement == real.cluster.placement
    assert cfg.trainer.backend == real.trainer.backend
    assert cfg.trainer.deepspeed.zero_stage == real.trainer.deepspeed.zero_stage
    assert cfg.model.lora.rank == real.model.lora.rank and cfg.model.lora.alpha == real.model.lora.alpha
    assert cfg.model.lora.target_modules == real.model.lora.target_modules
    for key in ("preset", "advantage", "loss", "aggregation", "clip_low", "clip_high", "kl", "tis_cap", "entropy_coef"):
        assert getattr(cfg.algorithm, key) == getattr(real.algorithm, key), key
    assert cfg.algorithm.dynamic_sampling.enabled == real.algorithm.dynamic_sampling.enabled
    assert cfg.algorithm.overlong.enabled == real.algorithm.overlong.enabled
    assert cfg.rollout.max_staleness == real.rollout.max_staleness
    assert cfg.reward.verifiers == real.reward.verifiers
    assert cfg.sync.method == real.sync.method and cfg.sync.verify == real.sync.verify
    assert cfg.rollout.multi_turn.enabled == real.rollout.multi_turn.enabled
    assert cfg.rollout.multi_turn.tools == real.rollout.multi_turn.tools
    assert cfg.rollout.agent == real.rollout.agent
    assert [s["name"] for s in cfg.eval.sets] == [s["name"] for s in real.eval.sets]
    assert cfg.rollout.engine_kwargs.get("enable_prefix_caching") == real.rollout.engine_kwargs.get("enable_prefix_caching")
    # replaced
    assert cfg.trainer.gpus_per_worker == 0 and cfg.rollout.gpus_per_engine == 0
    assert cfg.trainer.num_workers <= 2 and cfg.rollout.num_engines <= cfg.trainer.num_workers
    assert cfg.trainer.total_steps == 2 and cfg.checkpoint.every == 0 and cfg.checkpoint.save_final
    assert cfg.rollout.max_tokens <= 16 and cfg.rollout.n <= 4 and cfg.data.prompts_per_step <= 4
    assert cfg.model.dtype == cfg.trainer.dtype == "float32"
    assert cfg.cluster.address is None
    from rlvr.config.cluster import logical_cpus_needed

    assert logical_cpus_needed(cfg.trainer, cfg.rollout, cfg.reward) <= 2
    if name in REAL:
        family, placement, backend, stage, rank, preset, staleness = REAL[name]
        assert cfg.model.path == f"builtin:random-{family}"
        assert (real.cluster.placement, real.trainer.backend, real.model.lora.rank, real.algorithm.preset,
                real.rollout.max_staleness) == (placement, backend, rank, preset, staleness)
        assert stage is None or real.trainer.deepspeed.zero_stage == stage
        assert real.trainer.gpus_per_worker > 0  # a GPU recipe
        assert cfg.data.train_path.startswith("builtin:arithmetic#")  # its data/*.jsonl is not prepared here
        assert len(lines) == 2 and "builtin:arithmetic rows" in lines[1]
    else:
        assert cfg.model.path == real.model.path  # the built-in tiny models are kept
    assert lines[0].startswith("[rlvr] smoke: ") and "\n" not in lines[0]
    assert real.trainer.total_steps > 2  # smoke_config did not change its input


def test_gemma_recipe_keeps_prefix_caching_off():
    cfg, _ = load_smoke(os.path.join(REPO, "recipes", "gemma-3-4b-it.yaml"))
    assert cfg.rollout.engine_kwargs == {"enable_prefix_caching": False}


def test_smoke_reads_a_few_rows_of_files_that_exist(tmp_path):
    data = os.path.join(REPO, "tests", "fixtures", "datasets", "gsm8k.jsonl")
    cfg, lines = load_smoke(os.path.join(REPO, "recipes", "qwen3-0.6b-gsm8k-1gpu.yaml"),
                            [f"data.train_path={data}", "data.eval_path=hf:openai/gsm8k:main:test"])
    assert cfg.data.train_path == f"{data}#32" and cfg.data.eval_path == "builtin:arithmetic#32"
    assert "hf:openai/gsm8k:main:test" in lines[1] and data not in lines[1]


@pytest.mark.parametrize("path, family", [
    ("Qwen/Qwen3-0.6B", "qwen3"), ("Qwen/Qwen2.5-7B-Instruct", "qwen2"), ("Qwen/QwQ-32B", "qwen2"),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "qwen2"), ("meta-llama/Llama-3.1-8B", "llama"),
    ("google/gemma-3-1b-it", "gemma3"), ("mistralai/Mistral-7B-v0.3", "mistral"), ("/models/Qwen3-8B", "qwen3"),
])
def test_family_from_the_name(path, family):
    assert model_family(path) == family


def test_family_from_a_local_folder_and_unknown_ones(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gemma3_text"}')
    assert model_family(str(folder)) == "gemma3"
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(RecipeError, match="model.path.*gpt2"):
        model_family(str(folder))
    with pytest.raises(RecipeError, match="model.path: openai-community/gpt2: --smoke cannot tell"):
        model_family("openai-community/gpt2")


def test_smoke_of_the_cli_names_an_unknown_model_in_one_line():
    proc = _validate(os.path.join(REPO, "recipes", "tiny-cpu.yaml"), "model.path=openai-community/gpt2", "--smoke")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "model.path" in proc.stderr


def test_smoke_drops_the_cluster_address_and_gpu_only_settings():
    real = load_recipe(os.path.join(REPO, "recipes", "multinode-qwen3-8b.yaml"),
                       ["cluster.address=ray://head:10001", "trainer.compile=layers",
                        "rollout.tensor_parallel_size=2", "trainer.resources={node_a: 1}"], check=False)
    cfg, lines = smoke_config(real)
    assert cfg.cluster.address is None and cfg.rollout.tensor_parallel_size == 1 and cfg.trainer.resources == {}
    assert cfg.trainer.compile == "off" and "trainer.compile off" in lines[0]
    assert "cluster.address dropped" in lines[0] and "tensor_parallel_size 2 -> 1" in lines[0]
    assert real.cluster.address == "ray://head:10001"
