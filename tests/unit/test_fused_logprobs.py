"""`rlvr.trainer.logprobs.fused_token_logprobs` against `algos.token_logprobs` /
`algos.entropy_from_logits` on materialised logits: values and gradients (h, W, b)."""

from __future__ import annotations

import pytest
import torch

from rlvr import algos
from rlvr.trainer.logprobs import FusedLogprobs, fused_token_logprobs

N, H, V = 37, 16, 101  # N prime: no chunk size below divides it; V a prime too


def _inputs(dtype=torch.float32, bias=False, seed=0, n=N, h=H, v=V, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    hid = (torch.randn(n, h, generator=g) * scale).to(dtype).requires_grad_()
    w = (torch.randn(v, h, generator=g) * 0.5).to(dtype).requires_grad_()
    b = (torch.randn(v, generator=g) * 0.1).to(dtype).requires_grad_() if bias else None
    t = torch.randint(0, v, (n,), generator=g)
    return hid, w, b, t


def _reference(hid, w, b, t, temperature, entropy_coef):
    logits = torch.nn.functional.linear(hid, w, b)
    logp = algos.token_logprobs(logits, t, temperature)
    ent = algos.entropy_from_logits(logits, temperature)
    return logp, ent


def _grads(fn, hid, w, b, t, temperature, entropy_coef, seed=1):
    """Values and gradients of a weighted sum of logp and entropy (random weights per row)."""
    g = torch.Generator().manual_seed(seed)
    a, c = torch.randn(hid.shape[0], generator=g), torch.randn(hid.shape[0], generator=g)
    leaves = [x for x in (hid, w, b) if x is not None]
    for x in leaves:
        x.grad = None
    logp, ent = fn(hid, w, b, t, temperature, entropy_coef)
    loss = (a * logp).sum() + (entropy_coef * c * ent).sum() if entropy_coef else (a * logp).sum()
    loss.backward()
    return logp.detach(), ent.detach(), [x.grad.clone() for x in leaves]


def _fused(chunk):
    def fn(hid, w, b, t, temperature, entropy_coef):
        return fused_token_logprobs(hid, w, b, t, temperature, entropy=True, chunk=chunk)
    return fn


@pytest.mark.parametrize("chunk", [1, 5, 16, 37, 64, None])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("entropy_coef", [0.0, 0.3])
@pytest.mark.parametrize("bias", [False, True])
def test_values_and_gradients_match_materialised_logits(chunk, temperature, entropy_coef, bias):
    hid, w, b, t = _inputs(bias=bias, scale=3.0)
    ref = _grads(_reference, hid, w, b, t, temperature, entropy_coef)
    got = _grads(_fused(chunk), hid, w, b, t, temperature, entropy_coef)
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], ref[1], atol=1e-5, rtol=1e-5)
    for mine, theirs in zip(got[2], ref[2]):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


def test_logprobs_only_leading_shape_and_no_entropy():
    hid, w, _, t = _inputs()
    logp, ent = fused_token_logprobs(hid.reshape(1, N, H), w, None, t.reshape(1, N), 0.5, chunk=8)
    assert ent is None and logp.shape == (1, N)
    torch.testing.assert_close(logp[0], algos.token_logprobs(hid @ w.T, t, 0.5), atol=1e-5, rtol=1e-5)


def test_entropy_matches_the_logging_function_under_no_grad():
    hid, w, _, t = _inputs(v=1000, scale=4.0)
    with torch.no_grad():
        _, ent = fused_token_logprobs(hid, w, None, t, 0.7, entropy=True, chunk=10)
        ref = algos.entropy_for_logging(hid @ w.T, 0.7, rows=7)
    assert not ent.requires_grad
    torch.testing.assert_close(ent, ref, atol=1e-5, rtol=1e-5)


def test_bf16_weights_match_within_bf16_tolerance():
    hid, w, b, t = _inputs(dtype=torch.bfloat16, bias=True, n=70, v=333)
    ref = _grads(_reference, hid, w, b, t, 0.9, 0.1)
    got = _grads(_fused(16), hid, w, b, t, 0.9, 0.1)
    torch.testing.assert_close(got[0], ref[0], atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(got[1], ref[1], atol=2e-2, rtol=2e-2)
    for mine, theirs in zip(got[2], ref[2]):
        assert mine.dtype == torch.bfloat16
        torch.testing.assert_close(mine.float(), theirs.float(), atol=3e-2, rtol=3e-2)


def test_only_the_inputs_that_need_it_get_a_gradient():
    hid, w, _, t = _inputs()
    w = w.detach()  # a frozen head (LoRA without lm_head adapters)
    logp, _ = fused_token_logprobs(hid, w, None, t, chunk=8)
    logp.sum().backward()
    ref = hid.detach().clone().requires_grad_()
    algos.token_logprobs(ref @ w.T, t).sum().backward()
    torch.testing.assert_close(hid.grad, ref.grad, atol=1e-5, rtol=1e-5)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(3)
    hid = torch.randn(7, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(11, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(11, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randint(0, 11, (7,), generator=g)

    def both(h_, w_, b_):
        return FusedLogprobs.apply(h_, w_, b_, t, 0.8, True, 3)

    def logp_only(h_, w_, b_):
        return FusedLogprobs.apply(h_, w_, b_, t, 1.3, False, 2)[0]

    assert torch.autograd.gradcheck(both, (hid, w, b))
    assert torch.autograd.gradcheck(logp_only, (hid, w, b))


def test_backward_saves_no_rows_by_vocab_tensor():
    n, v = 64, 500
    hid, w, b, t = _inputs(bias=True, n=n, v=v)
    logp, ent = FusedLogprobs.apply(hid, w, b, t, 0.7, True, 16)
    assert logp.grad_fn is ent.grad_fn and type(logp.grad_fn).__name__ == "FusedLogprobsBackward"
    saved = logp.grad_fn.saved_tensors
    assert saved, "the function saves h, W, b, targets, logsumexp and entropy"
    for x in saved:
        assert x.numel() <= max(n * H, v * H), f"saved {tuple(x.shape)}"
        assert not (n in x.shape and v in x.shape), f"saved a [N, V]-sized tensor {tuple(x.shape)}"
    assert sum(x.numel() for x in saved) < n * v


# ---------------------------------------------------------------- the trainer's plumbing


def _model(kind: str):
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, Qwen2Config, Qwen3Config

    common = dict(vocab_size=67, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128)
    config = {"qwen3": lambda: Qwen3Config(**common, head_dim=8, tie_word_embeddings=False),
              "qwen2": lambda: Qwen2Config(**common, tie_word_embeddings=True),
              "gemma3": lambda: Gemma3TextConfig(**common, head_dim=8, final_logit_softcapping=5.0)}[kind]()
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).train()


def _samples():
    from rlvr.types import TrainSample

    g = torch.Generator().manual_seed(1)
    rand = lambda n: torch.randint(3, 67, (n,), generator=g).tolist()  # noqa: E731
    a, b = rand(5), rand(3)
    out = []
    for prompt, lengths in ((a, (4, 7)), (b, (2, 6, 5)), (a, (3,))):
        for c in lengths:
            ids = rand(c)
            out.append(TrainSample(prompt, ids, 0.5 - len(out) * 0.2, [0.0] * c))
    return out


def _loss(logp, ent, batch):
    mask = batch["completion_mask"]
    return ((logp * torch.linspace(-1, 1, logp.shape[1]) + 0.1 * ent) * mask).sum()


@pytest.mark.parametrize("kind", ["qwen3", "qwen2"])
@pytest.mark.parametrize("layout", ["padded", "shared"])
def test_completion_logprobs_match_the_logits_path(kind, layout):
    """Fused (hidden states + head weight) == logits path on the completion tokens, in value
    and in every parameter's gradient, for untied (qwen3) and tied (qwen2) heads, both layouts."""
    from rlvr.trainer.batch import collate, collate_shared
    from rlvr.trainer.heads import completion_logprobs, fused_head_reason
    from rlvr.trainer.worker import completion_logits

    samples = _samples()
    batch = collate(samples, 0) if layout == "padded" else collate_shared(samples, 0, always=True)
    valid = batch["completion_tokens"].bool()
    fused_model, ref_model = _model(kind), _model(kind)
    assert fused_head_reason(fused_model) is None
    logp, ent = completion_logprobs(fused_model, batch, "cpu", 0.8, entropy=True, chunk=5)
    _loss(logp, ent, batch).backward()
    logits = completion_logits(ref_model, batch, "cpu")
    ref_logp = algos.token_logprobs(logits, batch["targets"], 0.8)
    ref_ent = algos.entropy_from_logits(logits, 0.8)
    _loss(ref_logp, ref_ent, batch).backward()
    torch.testing.assert_close(logp[valid], ref_logp[valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent[valid], ref_ent[valid], atol=1e-5, rtol=1e-5)
    assert torch.all(logp[~valid] == 0) and torch.all(ent[~valid] == 0)
    for (name, p), q in zip(fused_model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    assert type(fused_model.get_output_embeddings()).forward is torch.nn.Linear.forward
    assert "forward" not in fused_model.get_output_embeddings().__dict__  # the head is restored


def test_fallbacks_are_explicit():
    from peft import LoraConfig, get_peft_model

    from rlvr.trainer.heads import fused_head_reason

    assert "soft-caps" in fused_head_reason(_model("gemma3"))
    body = get_peft_model(_model("qwen3"), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert fused_head_reason(body) is None  # LoRA elsewhere: the head is a plain Linear
    head = get_peft_model(_model("qwen3"), LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))
    assert "not a plain Linear" in fused_head_reason(head)
