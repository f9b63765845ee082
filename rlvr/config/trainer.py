"""The `trainer` section: the ranks, their backend (FSDP2 or DeepSpeed ZeRO) and the optimisation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal

from rlvr.config.checks import require

Backend = Literal["fsdp2", "deepspeed"]  # the keys of rlvr.trainer.backends.BACKENDS


@dataclass
class DeepSpeedConfig:
    zero_stage: Literal[1, 2, 3] = 2


@dataclass
class FSDP2Config:
    reshard_after_forward: bool = True


@dataclass
class TrainerConfig:
    backend: Backend = "fsdp2"
    num_workers: int = 2  # ranks
    total_steps: int = 100
    lr: float = 3e-4
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0
    micro_batch_size: int = 64  # sequences per forward/backward on one rank
    # > 0: micro-batches balanced by tokens instead of by count, at most this many per micro-batch
    # where a sequence allows (micro_batch_size is then unused): padded tokens (rows x longest prompt
    # + completion), or with pack_sequences the real ones (sum of prompt + completion lengths)
    max_tokens_per_micro: int = 0
    # each micro-batch as one row of its samples back to back, no padding, attention kept inside each
    # sample (rlvr.trainer.batch.collate_packed, rlvr.trainer.packed); with share_prompts, a prompt is
    # in the row once, before its completions (works under gradient_checkpointing too). On the tiny
    # CPU recipe the trainer step takes 0.65x the shared-prompt padded layout's, 0.6x with completions
    # of 8..256 tokens, with less activation memory (python -m bench.packing, 2026-12-05)
    pack_sequences: bool = True
    updates_per_step: int = 1  # optimizer steps per batch (mini-batches)
    dtype: Literal["float32", "bfloat16"] = "float32"  # training precision
    num_threads: int = 1  # torch threads per rank
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    gradient_checkpointing: bool = False
    # each prompt's forward/backward once per micro-batch, shared by its completions: in the packed row,
    # or (pack_sequences off) through the KV cache (rlvr.trainer.batch), which is off with
    # gradient_checkpointing (HF turns the cache off then)
    share_prompts: bool = True
    # torch.compile parts of the policy (rlvr.trainer.compile): `blocks` the norm and MLP blocks,
    # `layers` whole decoder layers (packed layout; else blocks). On the CPU benchmark model,
    # layers take 6-7% off a step after ~10-20 s of compiling in the first steps (python -m
    # bench.compile); needs a C++ compiler on CPU; not with DeepSpeed ZeRO-3 or LoRA
    compile: Literal["off", "blocks", "layers"] = "off"
    # log-probs and entropy from the final hidden states and the LM head weight, a chunk of tokens
    # at a time (rlvr.trainer.heads / rlvr.trainer.logprobs), never the [B, T, vocab] logits and
    # their float copy; falls back by itself for Gemma's logit soft-capping, LoRA on lm_head and
    # model types outside rlvr.trainer.heads.FUSED_MODEL_TYPES
    fused_logprobs: bool = True
    logprob_chunk: int = 0  # tokens per chunk of the fused path; 0: ~16M logits (~110 at vocab 151,936)
    offload: bool = False  # colocate on GPU: params/grads/optimizer state to CPU while engines generate
    resources: Dict[str, float] = field(default_factory=dict)  # custom Ray resources per rank (node pinning)
    # a rank that dies: the ranks are started again and the run goes back to its latest complete
    # checkpoint (the start when there is none), in the same driver, at most this many times
    max_restarts: int = 1
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    fsdp2: FSDP2Config = field(default_factory=FSDP2Config)

    def check(self) -> None:
        require(not (self.compile != "off" and self.backend == "deepspeed" and self.deepspeed.zero_stage == 3),
                "trainer.compile", "is not supported with DeepSpeed ZeRO-3 (its hooks gather "
                "parameters inside the compiled modules); use stage 1/2 or fsdp2")
        require(self.num_workers >= 1, "trainer.num_workers", "must be >= 1")
        require(self.total_steps >= 1, "trainer.total_steps", "must be >= 1")
        require(self.lr > 0, "trainer.lr", "must be > 0")
        require(self.micro_batch_size >= 1, "trainer.micro_batch_size", "must be >= 1")
        require(self.max_tokens_per_micro >= 0, "trainer.max_tokens_per_micro", "must be >= 0 (0: off)")
        require(self.updates_per_step >= 1, "trainer.updates_per_step", "must be >= 1")
        require(len(self.betas) == 2, "trainer.betas", "must be two numbers")
        require(self.num_threads >= 1, "trainer.num_threads", "must be >= 1")
        require(self.logprob_chunk >= 0, "trainer.logprob_chunk", "must be >= 0 (0: automatic)")
        require(self.max_restarts >= 0, "trainer.max_restarts", "must be >= 0")
