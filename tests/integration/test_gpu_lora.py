"""LoRA on a CUDA trainer rank (FSDP2 and DeepSpeed ZeRO-2): marked `gpu`, skipped without CUDA.

The CPU tests (`test_lora_trainer.py`) check LoRA over gloo; this runs the same worker code
on a GPU, one rank in a fresh spawned process (no Ray), and checks against plain peft on the
CPU what must hold for a LoRA run:
* one step with the KL term on changes adapter tensors only: every base weight still
  equals the model file;
* the KL reference (adapters disabled, on CUDA) gives the base model's log-probs;
* the merged weights the engines get equal peft's `merge_and_unload()` of the trained adapter;
* the checkpoint is a PEFT adapter folder that `PeftModel.from_pretrained` loads to the
  same merged weights.
"""

from __future__ import annotations

import pytest

from rlvr.config import AlgorithmConfig, KLConfig, LoRAConfig, TrainerConfig
from tests.integration.test_gpu import _in_fresh_process, _trained_worker

pytestmark = pytest.mark.gpu
LORA = LoRAConfig(rank=8, alpha=16)


def _merged_reference(model_dir: str, adapter: dict):
    """peft's own merge of `adapter` (PEFT file names) into the base model, on the CPU."""
    import torch
    from peft import get_peft_model, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from rlvr.trainer.lora import peft_config

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), peft_config(LORA))
    result = set_peft_model_state_dict(model, adapter)
    assert not result.unexpected_keys, result.unexpected_keys
    return model.merge_and_unload().state_dict()


def _lora_step(model_dir: str, backend: str, tmp: str) -> dict:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from rlvr.trainer.batch import collate
    from rlvr.trainer.lora import adapter_state_dict, hf_name

    cfg = TrainerConfig(backend=backend, num_workers=1, micro_batch_size=4, lr=1e-2)
    algo = AlgorithmConfig(kl=KLConfig(coef=0.1, estimator="k1", where="loss"))
    worker, out, samples = _trained_worker(model_dir, cfg, algo, LORA)
    assert worker.device.type == "cuda" and worker.peft_model is not None
    raw = worker.backend_state_dict()  # peft names: base_layer and lora_A/B tensors
    base = load_file(f"{model_dir}/model.safetensors")
    adapters = {n: t for n, t in raw.items() if ".lora_" in n}
    base_unchanged = all(torch.equal(t.cpu(), base[hf_name(n)]) for n, t in raw.items()
                         if ".lora_" not in n and hf_name(n) in base)
    b_moved = any(t.abs().max().item() > 0 for n, t in adapters.items() if ".lora_B." in n)

    # the KL reference on CUDA (adapters disabled) against the base model on the CPU
    batch = collate(samples[:4], pad_id=0)
    ref = worker._ref_logprobs(batch).cpu()
    plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    T = batch["targets"].shape[1]
    with torch.no_grad():
        logits = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits[:, -T - 1 : -1]
    expected = torch.log_softmax(logits.float(), -1).gather(-1, batch["targets"].unsqueeze(-1)).squeeze(-1)
    mask = batch["completion_mask"].bool()
    ref_diff = (ref - expected)[mask].abs().max().item()

    merged = worker.full_state_dict()
    reference = _merged_reference(model_dir, {n: t.cpu() for n, t in adapter_state_dict(adapters).items()})
    merge_diff = max((merged[n].cpu() - t).abs().max().item() for n, t in reference.items() if n in merged)
    missing = sorted(set(reference) - set(merged) - {"lm_head.weight"})  # a tied head may be left out

    worker.save_checkpoint(tmp)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), tmp)
    loaded_state = loaded.merge_and_unload().state_dict()
    checkpoint_diff = max((loaded_state[n] - t).abs().max().item() for n, t in reference.items())
    return {"loss": out["loss"], "adapters": len(adapters), "base_unchanged": base_unchanged, "b_moved": b_moved,
            "ref_diff": ref_diff, "merge_diff": merge_diff, "missing": missing, "checkpoint_diff": checkpoint_diff}


@pytest.mark.parametrize("backend", ["fsdp2", "deepspeed"])
def test_lora_step_on_cuda(random_model_dir, backend, tmp_path):
    r = _in_fresh_process(_lora_step, random_model_dir, backend, str(tmp_path / "ckpt"))
    assert r["adapters"] > 0 and r["b_moved"], r
    assert r["base_unchanged"], r
    assert r["ref_diff"] < 1e-4, r
    assert r["merge_diff"] < 1e-5, r
    assert r["missing"] == [], r
    assert r["checkpoint_diff"] < 1e-5, r
