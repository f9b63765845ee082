"""`trainer.compile` (`rlvr.trainer.compile`): compiled norm/MLP blocks (on the padded
shared-prompt path) and compiled whole decoder layers (on the packed path) give the eager
model's log-probs and gradients, one compiled function per class; the layers trace without a
graph break (a break would mean eager attention between two compiled halves)."""

from __future__ import annotations

import shutil

import pytest
import torch

from rlvr.trainer.batch import collate_packed, collate_shared
from rlvr.trainer.compile import compile_modules, compile_seconds
from rlvr.trainer.packed import use_varlen_attention
from rlvr.trainer.worker import completion_logits, shared_prompt_logits
from rlvr.types import TrainSample

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="torch.compile on CPU needs a C++ compiler")


def _model():
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).train()


def _loss_and_grads(model, batches, forward=shared_prompt_logits, device="cpu"):
    model.zero_grad()
    total = 0.0
    for batch in batches:
        logits = forward(model, batch, device)
        loss = (logits.log_softmax(-1).gather(-1, batch["targets"].to(device)[..., None]).squeeze(-1)
                * batch["completion_mask"].to(device)).sum()
        loss.backward()
        total += loss.item()
    return total, {n: p.grad.cpu() for n, p in model.named_parameters()}


def _sampler():
    g = torch.Generator().manual_seed(1)

    def sample(prompt_len, completion_len, n=3):
        prompt = torch.randint(3, 64, (prompt_len,), generator=g).tolist()
        return [TrainSample(prompt, torch.randint(3, 64, (completion_len,), generator=g).tolist(), 1.0,
                            [0.0] * completion_len) for _ in range(n)]
    return sample


def test_compiled_blocks_match_eager():
    eager = _model()
    compiled = _model()
    names = compile_modules(compiled, "blocks")
    assert names == ["Qwen3MLP", "Qwen3RMSNorm"]
    # two micro-batch shapes, as a step with uneven lengths gives the trainer
    sample = _sampler()
    batches = [collate_shared(sample(5, 7) + sample(6, 4), 0), collate_shared(sample(9, 11), 0)]
    want_loss, want = _loss_and_grads(eager, batches)
    got_loss, got = _loss_and_grads(compiled, batches)
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    assert all(type(m).forward is not m.forward.__func__ for m in compiled.modules()
               if type(m).__name__.endswith(("MLP", "RMSNorm")))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_compiled_layers_match_eager_on_packed_rows(device):
    from torch._dynamo.utils import counters

    eager, compiled = _model().to(device), _model().to(device)
    for model in (eager, compiled):
        assert use_varlen_attention(model)
    assert compile_modules(compiled, "layers") == ["Qwen3DecoderLayer"]
    assert not torch._dynamo.config.suppress_errors  # a failed compile fails the test (the trainer runs it eagerly)
    sample = _sampler()
    # two rows of different shapes, as in training (every length differs: rows, heads, tails, mask
    # widths): shared prompts with several completions each, and a prompt with one completion right after it
    batches = [collate_packed(sample(5, 7) + sample(6, 4, n=2) + sample(4, 9, n=1), 0, share=True),
               collate_packed(sample(9, 12, n=2) + sample(3, 2, n=1), 0, share=True)]
    counters.clear()
    want_loss, want = _loss_and_grads(eager, batches, completion_logits, device)
    got_loss, got = _loss_and_grads(compiled, batches, completion_logits, device)
    assert not counters["graph_break"], dict(counters["graph_break"])
    # compiled, not run eagerly; once: the second row (new lengths) reuses the symbolic-shape graph
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    assert compile_seconds() > 0


def test_the_trainer_compiles_layers_only_on_the_packed_layout():
    """`compile_policy` (what `trainer.compile` runs): on the padded layout (a KV cache through the
    layers) `layers` compiles the blocks instead and says so; a compile failure runs eagerly."""
    from rlvr.trainer.compile import compile_policy

    before = torch._dynamo.config.suppress_errors
    try:
        padded, packed = _model(), _model()
        notes = compile_policy(padded, "layers", packed=False)
        assert "norm and MLP blocks only" in notes[0] and "Qwen3MLP, Qwen3RMSNorm compiled" in notes[1]
        assert "Qwen3DecoderLayer compiled" in compile_policy(packed, "layers", packed=True)[0]
        layer = packed.model.layers[0]
        assert layer.forward.__func__ is not type(layer).forward and "forward" not in layer.mlp.__dict__
        assert torch._dynamo.config.suppress_errors
    finally:
        torch._dynamo.config.suppress_errors = before
