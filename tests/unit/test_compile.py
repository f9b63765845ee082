"""`trainer.compile_blocks`: compiled norm/MLP blocks give the eager model's logits and gradients,
one compiled function per block class, on the shared-prompt path the trainer runs."""

from __future__ import annotations

import shutil

import pytest
import torch

from rlvr.trainer.batch import collate_shared
from rlvr.types import TrainSample
from rlvr.trainer.compile import compile_blocks
from rlvr.trainer.worker import shared_prompt_logits

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="torch.compile on CPU needs a C++ compiler")


def _model():
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).train()


def _loss_and_grads(model, batches):
    model.zero_grad()
    total = 0.0
    for batch in batches:
        logits = shared_prompt_logits(model, batch, "cpu")
        loss = (logits.log_softmax(-1).gather(-1, batch["targets"][..., None]).squeeze(-1)
                * batch["completion_mask"]).sum()
        loss.backward()
        total += loss.item()
    return total, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_compiled_blocks_match_eager():
    eager = _model()
    compiled = _model()
    names = compile_blocks(compiled)
    assert names == ["Qwen3MLP", "Qwen3RMSNorm"]
    g = torch.Generator().manual_seed(1)

    def sample(prompt_len, completion_len):
        prompt = torch.randint(3, 64, (prompt_len,), generator=g).tolist()
        return [TrainSample(prompt, torch.randint(3, 64, (completion_len,), generator=g).tolist(), 1.0,
                            [0.0] * completion_len) for _ in range(3)]

    # two micro-batch shapes, as a step with uneven lengths gives the trainer
    batches = [collate_shared(sample(5, 7) + sample(6, 4), 0), collate_shared(sample(9, 11), 0)]
    want_loss, want = _loss_and_grads(eager, batches)
    got_loss, got = _loss_and_grads(compiled, batches)
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    assert all(type(m).forward is not m.forward.__func__ for m in compiled.modules()
               if type(m).__name__.endswith(("MLP", "RMSNorm")))
