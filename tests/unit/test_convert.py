"""`rlvr convert swift|trl`: the recipe printed for an ms-swift GRPO command and a TRL GRPOConfig
YAML maps the settings to the right keys, lists the rest, and loads with `load_recipe`."""

from __future__ import annotations

import os
import shlex

import yaml

from rlvr.cli.main import main
from rlvr.config import load_recipe

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWIFT = ("swift rlhf --rlhf_type grpo --model Qwen/Qwen3-8B --dataset AI-MO/NuminaMath-TIR --reward_funcs accuracy "
         "--num_generations 16 --use_vllm true --vllm_mode colocate --deepspeed zero3 --train_type full "
         "--learning_rate 1e-6 --per_device_train_batch_size 4 --max_completion_length 2048 --temperature 1.0 "
         "--beta 0.04")
TRL = """
model_name_or_path: Qwen/Qwen2.5-1.5B-Instruct
dataset_name: agentica-org/DeepScaleR-Preview-Dataset
reward_funcs: [accuracy_reward, think_format_reward]
learning_rate: 1.0e-6
num_generations: 8
max_prompt_length: 512
max_completion_length: 4096
temperature: 0.7
beta: 0.0
epsilon: 0.2
epsilon_high: 0.28
loss_type: dr_grpo
scale_rewards: false
num_iterations: 2
per_device_train_batch_size: 8
gradient_accumulation_steps: 4
max_steps: 500
use_vllm: true
vllm_mode: server
use_peft: true
lora_r: 64
lora_alpha: 128
bf16: true
gradient_checkpointing: true
mask_truncated_completions: true
importance_sampling_level: sequence
"""


def _convert(capsys, argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0
    captured = capsys.readouterr()
    (tmp_path / "recipe.yaml").write_text(captured.out)
    return yaml.safe_load(captured.out), captured.out, captured.err


def test_swift_command(capsys, tmp_path, monkeypatch):
    recipe, text, err = _convert(capsys, ["convert", "swift", "--gpus", "8", "--", *shlex.split(SWIFT),
                                          "--max_length", "4096"], tmp_path, monkeypatch)
    assert recipe["model"] == {"path": "Qwen/Qwen3-8B", "dtype": "bfloat16", "lora": {"rank": 0}}
    assert recipe["rollout"]["n"] == 16 and recipe["rollout"]["max_tokens"] == 2048
    assert recipe["rollout"]["temperature"] == 1.0 and recipe["rollout"]["engine"] == "vllm"
    assert recipe["cluster"]["placement"] == "colocate"
    assert recipe["trainer"]["backend"] == "deepspeed" and recipe["trainer"]["deepspeed"]["zero_stage"] == 3
    assert recipe["trainer"]["lr"] == 1e-6 and recipe["trainer"]["micro_batch_size"] == 4
    assert recipe["trainer"]["num_workers"] == 8 and recipe["rollout"]["num_engines"] == 8
    assert recipe["data"]["prompts_per_step"] == 2  # 4 per GPU x 8 GPUs / 16 generations
    assert recipe["algorithm"]["kl"]["coef"] == 0.04
    assert recipe["reward"]["verifiers"] == [{"name": "math"}]
    assert recipe["data"]["train_path"] == "data/numinamath-tir.jsonl"
    assert "rlvr data prepare numinamath --from hf:AI-MO/NuminaMath-TIR --out data/numinamath-tir.jsonl" in text
    assert "--max_length" in err and "# ms-swift settings with no rlvr equivalent" in text
    # the recipe loads once the data file the header asks for is prepared
    os.makedirs(tmp_path / "data")
    assert main(["data", "prepare", "numinamath", "--from", os.path.join(REPO, "tests", "fixtures", "datasets",
                                                                          "numinamath-tir.jsonl"),
                 "--out", "data/numinamath-tir.jsonl"]) == 0
    cfg = load_recipe(str(tmp_path / "recipe.yaml"))
    assert cfg.rollout.n == 16 and cfg.trainer.deepspeed.zero_stage == 3 and cfg.cluster.placement == "colocate"
    assert cfg.algorithm.kl.coef == 0.04 and cfg.model.path == "Qwen/Qwen3-8B"


def test_swift_lora_and_single_gpu(capsys, tmp_path, monkeypatch):
    recipe, _, err = _convert(capsys, ["convert", "swift", "--", "NPROC_PER_NODE=2", *shlex.split(SWIFT.replace(
        "--train_type full", "--train_type lora --lora_rank 16 --lora_alpha 32 --reward_funcs accuracy format"
        " --loss_type dapo --epsilon_high 0.28 --num_iterations 1 --max_steps 300 --system 'Think first.'"))],
        tmp_path, monkeypatch)
    assert recipe["model"]["lora"] == {"rank": 16, "alpha": 32.0}
    assert recipe["trainer"]["num_workers"] == 2 and recipe["trainer"]["total_steps"] == 300
    assert recipe["algorithm"]["aggregation"] == "token_mean" and recipe["algorithm"]["clip_high"] == 0.28
    assert recipe["reward"]["verifiers"] == [{"name": "math"}, {"name": "format", "require_think": True}]
    assert recipe["data"]["system_prompt"] == "Think first."
    assert "4 x" not in err and "8 completions per generation is not a multiple" in err


def test_trl_config(capsys, tmp_path, monkeypatch):
    (tmp_path / "grpo.yaml").write_text(TRL)
    recipe, text, err = _convert(capsys, ["convert", "trl", str(tmp_path / "grpo.yaml"), "--gpus", "4"],
                                 tmp_path, monkeypatch)
    assert recipe["model"] == {"path": "Qwen/Qwen2.5-1.5B-Instruct", "dtype": "bfloat16",
                               "lora": {"rank": 64, "alpha": 128.0}}
    assert recipe["data"]["train_path"] == "data/deepscaler-preview-dataset.jsonl"
    assert recipe["data"]["prompts_per_step"] == 16  # 8 x 4 GPUs x 4 accumulation / 8 generations
    algo = recipe["algorithm"]
    assert algo == {"kl": {"coef": 0.0}, "clip_low": 0.2, "clip_high": 0.28, "aggregation": "seq_mean_token_sum_norm",
                    "advantage": "dr_grpo", "loss": "gspo"}
    assert recipe["rollout"]["n"] == 8 and recipe["rollout"]["max_tokens"] == 4096
    assert recipe["rollout"]["temperature"] == 0.7 and recipe["cluster"]["placement"] == "side"
    trainer = recipe["trainer"]
    assert trainer["updates_per_step"] == 2 and trainer["total_steps"] == 250  # 500 optimizer steps / 2 per batch
    assert trainer["gradient_checkpointing"] is True and trainer["dtype"] == "bfloat16"
    assert trainer["micro_batch_size"] == 8 and trainer["num_workers"] == 4
    for setting in ("max_prompt_length", "mask_truncated_completions"):
        assert f"not converted: {setting}:" in err and f"#   {setting}: " in text
    assert main(["data", "prepare", "deepscaler", "--from", os.path.join(REPO, "tests", "fixtures", "datasets",
                                                                          "deepscaler.json"),
                 "--out", "data/deepscaler-preview-dataset.jsonl"]) == 0
    cfg = load_recipe(str(tmp_path / "recipe.yaml"))
    assert cfg.algorithm.loss == "gspo" and cfg.model.lora.rank == 64 and cfg.rollout.engine == "vllm"


def test_not_grpo_is_refused(capsys):
    assert main(["convert", "swift", "--", "swift", "rlhf", "--rlhf_type", "dpo", "--model", "x/y"]) == 2
    assert "only --rlhf_type grpo" in capsys.readouterr().err
