"""`saved_format`: what the trainer sends to engines and writes to checkpoints is in the
checkpoint layout (transformers 5 fuses a MoE layer's experts in memory)."""

from __future__ import annotations

import torch

from rlvr.models.families import build_tiny
from rlvr.trainer.saved_format import saved_format


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def test_moe_experts_go_back_to_one_tensor_per_expert_and_load_back(tmp_path):
    from safetensors.torch import load_file

    from rlvr.run.checkpoint import write_hf_model

    path = build_tiny("qwen3_moe", str(tmp_path / "moe"), seed=0)
    model = _load(path)
    live = dict(model.state_dict())
    assert "model.layers.0.mlp.experts.gate_up_proj" in live  # fused in memory: [4 experts, 2 x 64, 128]
    out = saved_format(model, live)
    on_disk = load_file(f"{path}/model.safetensors")
    assert set(out) == set(on_disk)  # exactly the names save_pretrained wrote
    for name, tensor in on_disk.items():
        assert torch.equal(out[name], tensor), name
    # gate_up_proj[e] is [gate (64 rows); up (64 rows)]: expert 2's up_proj is rows 64..127
    assert torch.equal(out["model.layers.1.mlp.experts.2.up_proj.weight"],
                       live["model.layers.1.mlp.experts.gate_up_proj"][2, 64:])
    (tmp_path / "ckpt").mkdir()
    write_hf_model(str(tmp_path / "ckpt"), path, out)
    again = _load(str(tmp_path / "ckpt"))
    for name, tensor in again.state_dict().items():
        assert torch.equal(tensor, live[name]), name


def test_dense_models_and_empty_ranks_pass_through(tmp_path):
    path = build_tiny("qwen3", str(tmp_path / "dense"), seed=0)
    model = _load(path)
    live = dict(model.state_dict())
    assert saved_format(model, live) is live
    assert saved_format(model, None) is None
