"""The work both systems do in `bench.compare_trl`: one model, one prompt set, one spec.

`build(folder, ...)` writes, deterministically:
    model/          a Qwen3-architecture model, random init (seeded), fp32, with the
                    project's local byte-level BPE tokenizer (`rlvr.models.tiny.build_tokenizer`)
    prompts.jsonl   {"prompt": chat-formatted text, "answer": str}, read in file order
    spec.json       everything the TRL side (`bench/trl_grpo.py`) needs to do the same work

Nothing is downloaded. The model is untrained, so rewards are all 0: both systems are
told to train on every completion anyway (rlvr: `algorithm.skip_uniform_groups=false`;
TRL always does), so the work is the same whatever the rewards.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field



@dataclass
class Work:
    """One GRPO step's work, the same in both systems."""

    steps: int = 10
    warmup_steps: int = 2  # excluded from the medians (engine/allocator warm-up)
    prompts_per_step: int = 8
    group_size: int = 8
    max_new_tokens: int = 64  # EOS ignored: every completion is exactly this long
    micro_batch_size: int = 16  # completions per forward/backward
    lr: float = 1e-5
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    dtype: str = "float32"
    threads: int = 2  # the machine's cores
    temperature: float = 1.0
    beta: float = 0.0  # no KL term, no reference model
    epsilon: float = 0.2  # PPO clip
    seed: int = 0
    gradient_checkpointing: bool = False
    # model shape (Qwen3)
    hidden_size: int = 512
    num_layers: int = 12
    num_heads: int = 8
    num_kv_heads: int = 4
    head_dim: int = 64
    intermediate_size: int = 1536


def _prompts(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randrange(100, 1000), rng.randrange(100, 1000)
        q = f"What is {a}+{b}? Think, then give the final number."
        text = f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
        out.append({"prompt": text, "answer": str(a + b)})
    return out


def build_model(out_dir: str, work: Work) -> int:
    """Save the random-init model and tokenizer; return the parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from rlvr.models.tiny import EOS_TOKEN, PAD_TOKEN, build_tokenizer

    tok = build_tokenizer(out_dir)
    config = Qwen3Config(
        vocab_size=len(tok), hidden_size=work.hidden_size, intermediate_size=work.intermediate_size,
        num_hidden_layers=work.num_layers, num_attention_heads=work.num_heads,
        num_key_value_heads=work.num_kv_heads, head_dim=work.head_dim, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tok.convert_tokens_to_ids(PAD_TOKEN), dtype="float32",
    )
    torch.manual_seed(work.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out_dir)
    return sum(p.numel() for p in model.parameters())


def build(folder: str, work: Work) -> dict:
    """Write model, prompts and spec under `folder` (reused when the spec is unchanged)."""
    os.makedirs(folder, exist_ok=True)
    spec_path = os.path.join(folder, "spec.json")
    model_dir, prompts_path = os.path.join(folder, "model"), os.path.join(folder, "prompts.jsonl")
    spec = {**asdict(work), "model_dir": model_dir, "prompts_path": prompts_path, "ignore_eos": True}
    if os.path.exists(spec_path):
        with open(spec_path) as f:
            old = json.load(f)
        if {k: v for k, v in old.items() if k != "params"} == spec:
            return old
    spec["params"] = build_model(model_dir, work)
    with open(prompts_path, "w") as f:
        for row in _prompts(work.steps * work.prompts_per_step, work.seed):
            f.write(json.dumps(row) + "\n")
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=1)
    return spec


def rlvr_overrides(spec: dict, out_dir: str) -> list[str]:
    """The recipe overrides that make `recipes/tiny-cpu.yaml` do `spec`'s work."""
    micro = spec["micro_batch_size"]
    return [
        f"model.path={spec['model_dir']}", f"data.train_path={spec['prompts_path']}", "data.eval_path=null",
        "data.apply_chat_template=false", f"data.prompts_per_step={spec['prompts_per_step']}",
        f"rollout.n={spec['group_size']}", f"rollout.max_tokens={spec['max_new_tokens']}", "rollout.ignore_eos=true",
        f"rollout.temperature={spec['temperature']}", f"trainer.total_steps={spec['steps']}",
        f"trainer.lr={spec['lr']}", f"trainer.betas={spec['betas']}", f"trainer.weight_decay={spec['weight_decay']}",
        f"trainer.grad_clip={spec['grad_clip']}", f"trainer.micro_batch_size={micro}",
        f"trainer.dtype={spec['dtype']}", f"trainer.gradient_checkpointing={spec['gradient_checkpointing']}",
        f"algorithm.clip_low={spec['epsilon']}", f"algorithm.clip_high={spec['epsilon']}",
        "algorithm.skip_uniform_groups=false", "data.shuffle=false", f"run.seed={spec['seed']}", "eval.every=0",
        "checkpoint.save_final=false", "logging.progress=false", "logging.print_samples=0",
        f"run.output_dir={out_dir}",
    ]
