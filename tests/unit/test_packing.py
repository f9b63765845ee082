"""The packed layout (`trainer.pack_sequences`: `rlvr.trainer.batch.collate_packed` and
`rlvr.trainer.packed`) against the padded one: the same per-token log-probs, entropies and
values, and the same gradient w.r.t. every parameter, on every family rlvr checks
(`rlvr.models.families`) with sdpa and eager attention, fused and unfused heads."""

from __future__ import annotations

import pytest
import torch

from rlvr import algos
from rlvr.trainer.batch import collate, collate_packed
from rlvr.types import TrainSample

VOCAB = 64


def _tokenizer():
    """A real (word-level) tokenizer just big enough to size the family configs."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from rlvr.models.tiny import EOS_TOKEN, PAD_TOKEN

    vocab = {t: i for i, t in enumerate([PAD_TOKEN, EOS_TOKEN] + [f"w{i}" for i in range(VOCAB - 2)])}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="w0")))


def _model(family: str, attn: str = "sdpa"):
    """attn: sdpa/eager (transformers' block-diagonal mask from the position ids on packed batches)
    or varlen (`rlvr.trainer.packed.varlen_attention`, what the trainer switches sdpa/eager to)."""
    from transformers import AutoModelForCausalLM

    from rlvr.models.families import FAMILIES
    from rlvr.trainer.packed import use_varlen_attention

    config = FAMILIES[family](_tokenizer())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attn.replace(
        "varlen", "sdpa")).train()
    return model, (lambda: use_varlen_attention(model)) if attn == "varlen" else (lambda: None)


def _samples(lengths=((3, 1), (9, 37), (2, 12), (9, 3), (5, 24)), seed=1):
    """Prompts and completions of very different lengths (> the families' sliding window of 8);
    the fourth sample is a multi-turn episode (observation tokens masked out of the loss)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda n: torch.randint(2, VOCAB, (n,), generator=g).tolist()  # noqa: E731
    out = []
    for i, (p, c) in enumerate(lengths):
        mask = [1, 0, 1][:c] + [1] * (c - 3) if i == 3 else None
        out.append(TrainSample(rand(p), rand(c), 0.7 - 0.3 * i, [-1.0] * c, loss_mask=mask))
    return out


def _stats(model, batch, fused: bool, device="cpu"):
    """(log-probs, entropies) [B, T] the trainer computes from `batch` (`TrainerWorker._token_stats`)."""
    from rlvr.trainer.heads import completion_logprobs
    from rlvr.trainer.worker import completion_logits

    if fused:
        return completion_logprobs(model, batch, device, 0.8, entropy=True, chunk=7)
    logits = completion_logits(model, batch, device)
    return (algos.token_logprobs(logits, batch["targets"].to(device), 0.8),
            algos.entropy_from_logits(logits, 0.8))


def _run(model, batch, fused: bool, device="cpu"):
    """Log-probs, entropies (on the completion tokens) and every parameter's gradient of a loss
    weighted by position, advantage and the loss mask (on the CPU)."""
    model.zero_grad()
    logp, ent = (x.cpu() for x in _stats(model, batch, fused, device))
    mask, valid = batch["completion_mask"], batch["completion_tokens"].bool()
    weight = torch.linspace(-1, 1, logp.shape[1]) + batch["advantages"]
    ((logp * weight + 0.1 * ent) * mask).sum().backward()
    return logp[valid].detach(), ent[valid].detach(), {n: p.grad.cpu() for n, p in model.named_parameters()
                                                       if p.grad is not None}


def _assert_same(got, ref):
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], ref[1], atol=1e-5, rtol=1e-5)
    assert got[2].keys() == ref[2].keys() and len(ref[2]) > 0
    for name in ref[2]:
        torch.testing.assert_close(got[2][name], ref[2][name], atol=1e-5, rtol=1e-4, msg=name)


def test_collate_packed_by_hand():
    samples = [TrainSample([5, 6, 7], [8, 9], 1.0, [-0.1, -0.2]), TrainSample([10], [11, 12, 13], -1.0, [0.0] * 3,
                                                                                loss_mask=[1, 0, 1])]
    batch = collate_packed(samples, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3]]
    assert batch["seq_lens"].tolist() == [5, 4]
    assert batch["segments"].tolist() == [[0, 3, 3, 2], [5, 1, 6, 3]]
    # sample 0: prompt ends at column 2, which predicts 8; sample 1 starts at 5: column 5 predicts 11
    assert batch["packed_index"].tolist() == [[2, 3, 0], [5, 6, 7]]
    assert batch["targets"].tolist() == [[8, 9, 0], [11, 12, 13]]
    assert batch["completion_mask"].tolist() == [[1, 1, 0], [1, 0, 1]]
    assert batch["completion_tokens"].tolist() == [[1, 1, 0], [1, 1, 1]]
    plain = collate(samples, pad_id=0)
    for key in ("targets", "completion_mask", "completion_tokens", "advantages", "rollout_logprobs"):
        assert torch.equal(batch[key], plain[key]), key


FAMILIES = ["qwen2", "qwen3", "llama", "gemma3", "mistral", "qwen3_moe"]


@pytest.mark.parametrize("family,attn", [(f, a) for a in ("varlen", "sdpa") for f in FAMILIES]
                         + [("qwen2", "eager"), ("mistral", "eager")])
def test_packed_equals_padded_on_every_family(family, attn):
    """Per-sample attention (varlen) and the block-diagonal mask transformers builds from the
    position ids (sdpa, eager) are exact for each family (gemma3/mistral: sliding windows of 8
    inside longer samples; gemma3: soft-capped logits, so the unfused head): log-probs,
    entropies and gradients."""
    from rlvr.trainer.heads import fused_head_reason

    samples = _samples()
    model, pack = _model(family, attn)
    fused = fused_head_reason(model) is None
    ref = _run(model, collate(samples, 0), fused)
    pack()
    _assert_same(_run(model, collate_packed(samples, 0), fused), ref)
    if fused:  # and the logits path on the same batch
        _assert_same(_run(model, collate_packed(samples, 0), False), ref)


def _grouped():
    """GRPO-like: runs of samples sharing a prompt (one prompt back again after another), very
    different completion lengths, an empty completion (a filler-like sample), a multi-turn mask."""
    g = torch.Generator().manual_seed(3)
    rand = lambda n: torch.randint(2, VOCAB, (n,), generator=g).tolist()  # noqa: E731
    p1, p2 = rand(5), rand(11)
    out = [TrainSample(p1, rand(c), 0.3 * i, [0.0] * c) for i, c in enumerate((4, 20, 1))]
    out += [TrainSample(p2, rand(9), -0.2, [0.0] * 9, loss_mask=[1, 0, 0] + [1] * 6), TrainSample(p2, [], 0.0, [])]
    return out + [TrainSample(p1, rand(13), 0.5, [0.0] * 13)]


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_shared_prompts_equal_padded_on_every_family(family):
    """A prompt once in the row, its completions after it, each attending to prompt + itself
    (rlvr's varlen attention only): the padded layout's log-probs, entropies and gradients."""
    from rlvr.trainer.heads import fused_head_reason

    samples = _grouped()
    model, pack = _model(family, "varlen")
    fused = fused_head_reason(model) is None
    ref = _run(model, collate(samples, 0), fused)
    pack()
    batch = collate_packed(samples, 0, share=True)
    assert batch["input_ids"].shape[1] == 5 + 4 + 20 + 1 + 11 + 9 + 0 + 5 + 13 and "seq_lens" not in batch
    _assert_same(_run(model, batch, fused), ref)


def test_collate_packed_shares_consecutive_prompts_by_hand():
    samples = [TrainSample([5, 6, 7], [8, 9], 1.0, [0.0] * 2), TrainSample([5, 6, 7], [10, 11, 12], 1.0, [0.0] * 3),
               TrainSample([1], [2], 1.0, [0.0])]
    batch = collate_packed(samples, 0, share=True)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 1, 2]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 4, 5, 0, 1]]  # completions continue the prompt
    assert batch["segments"].tolist() == [[0, 3, 3, 2], [0, 3, 5, 3], [8, 1, 9, 1]]
    # both completions' token 0 is predicted by the prompt's last column (2); 10 -> 11 at column 5
    assert batch["packed_index"].tolist() == [[2, 3, 0], [2, 5, 6], [8, 0, 0]]
    from rlvr.trainer.packed import PackedPlan, packed_forward, packed_groups

    assert packed_groups(batch["segments"]) == ((0, 3, ((3, 2), (5, 3))), (8, 1, ((9, 1),)))
    plan = PackedPlan(batch["segments"], "cpu")  # heads: the shared prompt, the last sample whole
    assert plan.head_idx.tolist() == [[0, 1, 2], [8, 9, 0]] and plan.tail_idx.tolist() == [[3, 4, 0], [5, 6, 7]]
    assert sorted(plan.cols.tolist()) == list(range(10))
    model, _ = _model("qwen2")  # transformers' own attention cannot run a shared row
    with pytest.raises(ValueError, match="shared prompts needs rlvr_varlen"):
        packed_forward(model, batch, "cpu")


@pytest.mark.parametrize("attn", ["varlen", "sdpa"])
@pytest.mark.parametrize("fused", [True, False])
def test_one_sample_batch_and_a_filler_row(fused, attn):
    """One sample (no boundary in the position ids: plain causal attention) and the trainer's
    filler micro-batch (a one-token prompt, no completion: nothing to predict)."""
    model, pack = _model("qwen2", attn)
    one = _samples(((4, 9),))
    filler = [TrainSample([0], [], 0.0, [])]
    ref = _run(model, collate(one, 0), fused)
    ref_logp, ref_ent = _stats(model, collate(filler, 0), fused)
    pack()
    _assert_same(_run(model, collate_packed(one, 0), fused), ref)
    logp, ent = _stats(model, collate_packed(filler, 0), fused)
    assert logp.shape == ent.shape == (1, 1)
    torch.testing.assert_close((logp.detach(), ent.detach()), (ref_logp.detach(), ref_ent.detach()))


def test_a_cache_turns_the_packed_mask_off():
    """Why `packed_forward` passes use_cache=False: with a cache (which use_cache=True creates)
    transformers does not look for packed sequences, and the samples attend to each other."""
    from rlvr.trainer.packed import packed_forward

    model, _ = _model("qwen3")
    batch = collate_packed(_samples(), 0)
    with torch.no_grad():
        right = packed_forward(model, batch, "cpu").logits
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=True).logits
    first = int(batch["seq_lens"][0])
    torch.testing.assert_close(leaky[:, :first], right[:, :first])  # the first sample has nothing before it
    assert (leaky[:, first:] - right[:, first:]).abs().max() > 1e-2


def test_packing_refuses_an_attention_without_the_packed_mask():
    from rlvr.trainer.packed import packing_reason

    model, pack = _model("qwen2", "varlen")
    assert packing_reason(model) is None
    pack()
    assert packing_reason(model) is None and model.config._attn_implementation == "rlvr_varlen"
    with pytest.raises(ValueError, match="packed batches only"):  # varlen attention is for packed rows only
        _stats(model, collate(_samples(), 0), True)
    model.config._attn_implementation = "paged|eager"
    assert "packed-sequence mask" in packing_reason(model)
    from rlvr.config import AlgorithmConfig, TrainerConfig
    from rlvr.trainer.worker import TrainerWorker

    worker = TrainerWorker(0, 1, TrainerConfig(num_threads=torch.get_num_threads()), AlgorithmConfig(), seed=0)
    worker.notes = []
    assert not worker._packable(model)  # padded micro-batches instead, said once at startup
    assert worker.notes == [f"trainer.pack_sequences: padded micro-batches instead: {packing_reason(model)}"]
    model.config._attn_implementation = "sdpa"
    type(model).__module__, module = "remote_code_model", type(model).__module__
    try:
        assert "not one of transformers' own model classes" in packing_reason(model)
    finally:
        type(model).__module__ = module


def test_varlen_attention_under_gradient_checkpointing():
    """The recomputed layers pick the same attention function as their forward (the switch is
    for good, not per call): gradients equal the padded layout's."""
    model, pack = _model("qwen3", "varlen")
    samples = _samples()
    ref = _run(model, collate(samples, 0), True)
    pack()
    model.gradient_checkpointing_enable({"use_reentrant": False})
    _assert_same(_run(model, collate_packed(samples, 0), True), ref)


def test_critic_values_equal_the_padded_layout():
    from transformers import AutoModelForTokenClassification

    from rlvr.models.families import FAMILIES
    from rlvr.trainer.critic import completion_values
    from rlvr.trainer.packed import use_varlen_attention

    config = FAMILIES["qwen3"](_tokenizer())
    config.num_labels, config.classifier_dropout = 1, 0.0
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_config(config, dtype=torch.float32).train()
    samples = _samples()
    results = []
    for batch in (collate(samples, 0), collate_packed(samples, 0)):
        if "packed_index" in batch:
            use_varlen_attention(model)
        model.zero_grad()
        values = completion_values(model, batch, "cpu")
        mask = batch["completion_mask"]
        ((values - batch["advantages"]) ** 2 * mask).sum().backward()
        results.append((values[batch["completion_tokens"].bool()].detach(),
                        torch.cat([p.grad.reshape(-1) for p in model.parameters()])))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[1][1], results[0][1], atol=1e-5, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("share", [False, True])
def test_packed_equals_padded_on_gpu(share):
    """The GPU twin: rlvr's varlen attention on CUDA SDPA kernels, fp32, fused head."""
    model, pack = _model("qwen3", "varlen")
    model = model.cuda()
    samples = _grouped()
    ref = _run(model, collate(samples, 0), True, "cuda")
    pack()
    _assert_same(_run(model, collate_packed(samples, 0, share=share), True, "cuda"), ref)
