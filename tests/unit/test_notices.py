"""The warnings that matter, printed once by the driver in rlvr's words (`rlvr.loop.notices`)."""

from __future__ import annotations

import json

from rlvr.config import load_recipe
from rlvr.loop.notices import startup_notices

WORKS, MISSING = (True, "bwrap works"), (False, "bwrap not found on PATH")


def _model(tmp_path, model_type: str) -> str:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return str(tmp_path)


def _cfg(*overrides):
    return load_recipe("recipes/tiny-cpu.yaml", list(overrides))


def test_the_default_run_has_nothing_to_say(tmp_path):
    assert startup_notices(_cfg(), _model(tmp_path, "qwen2"), [], bwrap=MISSING) == []


def test_an_engine_quirk_is_said_unless_the_recipe_overrides_it(tmp_path):
    path = _model(tmp_path, "gemma3_text")
    (note,) = startup_notices(_cfg(), path, [], bwrap=WORKS)
    assert "'gemma3_text'" in note and "enable_prefix_caching=False" in note and "rollout.engine_kwargs" in note
    assert startup_notices(_cfg("rollout.engine_kwargs={enable_prefix_caching: true}"), path, [], bwrap=WORKS) == []
    assert startup_notices(_cfg("rollout.engine=hf"), path, [], bwrap=WORKS) == []  # no vLLM: no quirk


def test_a_sandbox_without_bubblewrap_is_said_only_when_model_code_runs(tmp_path):
    path = _model(tmp_path, "qwen2")
    code = _cfg("reward.verifiers=[{name: code}]")
    (note,) = startup_notices(code, path, [], bwrap=MISSING)
    assert "without bubblewrap (bwrap not found on PATH)" in note and "apt-get install bubblewrap" in note
    assert startup_notices(code, path, [], bwrap=WORKS) == []
    assert startup_notices(_cfg(), path, [], bwrap=MISSING) == []  # math only: nothing runs model code


def test_trainer_notes_and_a_silently_lost_optimisation_come_once_each(tmp_path):
    unpacked = _cfg("trainer.gradient_checkpointing=true", "trainer.pack_sequences=false")
    notes = startup_notices(unpacked, _model(tmp_path, "qwen2"),
                            ["trainer.fused_logprobs: falling back to full logits: x"] * 2, bwrap=WORKS)
    assert len(notes) == 2
    assert "shared-prompt layout" in notes[0] and notes[1].endswith("full logits: x")
    # packed rows share prompts without the KV cache: gradient checkpointing loses nothing
    assert startup_notices(_cfg("trainer.gradient_checkpointing=true"), _model(tmp_path, "qwen2"), [],
                           bwrap=WORKS) == []


def test_optimisations_left_off_on_gpus_are_said(tmp_path):
    path = _model(tmp_path, "qwen2")
    gpu = ["trainer.gpus_per_worker=1", "rollout.gpus_per_engine=1", "cluster.placement=side"]
    notes = startup_notices(_cfg(*gpu), path, [], bwrap=WORKS)
    assert len(notes) == 2 and "trainer.dtype=bfloat16" in notes[0] and "enforce_eager=false" in notes[1]
    tuned = _cfg(*gpu, "trainer.dtype=bfloat16", "rollout.engine_kwargs={enforce_eager: true}")
    assert startup_notices(tuned, path, [], bwrap=WORKS) == []  # the recipe chose: nothing to say
