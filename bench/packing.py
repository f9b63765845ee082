"""`trainer.pack_sequences`: padded vs packed micro-batches, trainer step time and activation memory.

    python -m bench.packing                         # both settings, 3 timed steps per layout
    python -m bench.packing --setting varlen --steps 5

One in-process trainer rank (FSDP2 over gloo, world 1, `trainer.num_threads` threads, fused
log-probs, PPO-clip token mean, AdamW) on the built-in tiny model with random weights (the default
recipe's architecture: Qwen2, hidden 128, 2 layers), `train_step` on the same samples in each
layout, the layouts interleaved step by step in the same process (the machine is shared: a
slow minute hits every layout alike). Layouts: `shared` (the default: each prompt once, its
completions on top of its KV cache), `padded` (share_prompts off: left-padded prompts,
right-padded completions), `packed_shared` (pack_sequences with share_prompts, the trainer's
packed default: one unpadded row per micro-batch, each prompt once followed by its completions,
per-sample SDPA: `rlvr.trainer.packed.varlen_attention`), `packed` (share_prompts off: every
sample's prompt again), `packed_mask`
(the same row under transformers' own block-diagonal [N, N] mask with SDPA: kept to show why not).

Settings:
- `tiny`: one rank's half of the default recipe's batch: 32 prompts x 8 samples, chat-formatted
  arithmetic prompts (~30 tokens), completions of 2..16 tokens (rollout.max_tokens 16), micro-batch 64.
- `varlen`: 8 prompts x 8 samples, completions of 8..256 tokens (uniform), micro-batch 16.

Memory: the peak of the bytes autograd holds for backward (saved tensors, counted once per
storage, parameters excluded) during a step: the activation memory, which is what the layout
changes (RSS high-water marks cannot be compared between interleaved layouts).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import weakref

LAYOUTS = ("shared", "padded", "packed_shared", "packed", "packed_mask")
SETTINGS = {  # prompts, group size, completion lengths (low, high), micro-batch
    "tiny": (32, 8, (2, 16), 64),
    "varlen": (8, 8, (8, 256), 16),
}


class SavedPeak:
    """Peak bytes of the tensors autograd saves for backward while active (parameters excluded)."""

    def __init__(self, params):
        self.params = {p.untyped_storage().data_ptr() for p in params}
        self.live: dict[int, list[int]] = {}  # storage -> [bytes, saved tensors on it]
        self.now = self.peak = 0

    def _pack(self, t):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self.params or not storage.nbytes():
            return t
        if key not in self.live:
            self.live[key] = [storage.nbytes(), 0]
            self.now += storage.nbytes()
            self.peak = max(self.peak, self.now)
        self.live[key][1] += 1
        weakref.finalize(t, self._free, key)
        return t

    def _free(self, key):
        entry = self.live[key]
        entry[1] -= 1
        if not entry[1]:
            self.now -= self.live.pop(key)[0]

    def hooks(self):
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)


def samples_for(setting: str, model_dir: str, seed: int = 0):
    from transformers import AutoTokenizer

    from rlvr.types import TrainSample

    prompts, group, (low, high), _ = SETTINGS[setting]
    tok = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(seed)
    vocab = len(tok)
    out = []
    for _ in range(prompts):
        q = f"Q: {rng.randrange(100)}+{rng.randrange(100)}=? A:"
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
        prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
        for _ in range(group):
            c = rng.randint(low, high)
            out.append(TrainSample(prompt, [rng.randrange(3, vocab) for _ in range(c)], rng.uniform(-1, 1),
                                   [-1.0] * c))
    return out


def set_layout(worker, layout: str) -> None:
    from rlvr.trainer.packed import use_varlen_attention

    worker.cfg.pack_sequences = layout.startswith("packed")
    worker.share_prompts = layout == "shared"
    worker.pack_shared = layout == "packed_shared"
    worker.hf_model.config._attn_implementation = "sdpa"
    if layout in ("packed", "packed_shared"):
        use_varlen_attention(worker.hf_model)


def run(setting: str, steps: int, threads: int) -> dict:
    import os

    from rlvr.cluster.env import free_port
    from rlvr.config import AlgorithmConfig, ArithmeticConfig, TinyModelConfig
    from rlvr.models.tiny import build_tiny_model
    from rlvr.trainer.batch import micro_tokens, split_micro
    from rlvr.trainer.worker import TrainerWorker

    folder = os.path.join(tempfile.gettempdir(), "rlvr-bench-packing", "tiny-random")
    model_dir = folder if os.path.exists(os.path.join(folder, "config.json")) else \
        build_tiny_model(folder, TinyModelConfig(sft_steps=0), ArithmeticConfig(), progress=False)
    from rlvr.config import TrainerConfig

    _, _, _, micro_batch = SETTINGS[setting]
    cfg = TrainerConfig(num_workers=1, num_threads=threads, micro_batch_size=micro_batch, total_steps=10 * steps,
                        lr=1e-6)
    worker = TrainerWorker(0, 1, cfg, AlgorithmConfig(), seed=0)
    worker.setup(("127.0.0.1", free_port()), model_dir)
    samples = samples_for(setting, model_dir)
    num_micro = -(-len(samples) // micro_batch)
    chunks = split_micro(samples, num_micro)
    tokens = sum(len(s.completion_ids) for s in samples)
    real = sum(micro_tokens(c, packed=True) for c in chunks)
    padded = sum(micro_tokens(c) for c in chunks)
    times: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    peaks: dict[str, int] = {k: 0 for k in LAYOUTS}
    params = list(worker.backend.model.parameters())
    for step in range(steps + 1):  # step 0 warms every layout up
        for layout in LAYOUTS:
            set_layout(worker, layout)
            meter = SavedPeak(params)
            with meter.hooks():
                out = worker.train_step(samples, float(tokens), num_micro)
            if step:
                times[layout].append(out["time"])
            peaks[layout] = max(peaks[layout], meter.peak)
    import torch.distributed as dist

    dist.destroy_process_group()  # the next setting's worker starts its own
    return {"setting": setting, "samples": len(samples), "micro_batches": num_micro, "real_tokens": real,
            "padded_tokens": padded, "times": times, "peaks": peaks}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--steps", type=int, default=3, help="timed steps per layout (after one warm-up each)")
    ap.add_argument("--threads", type=int, default=1, help="trainer.num_threads (the default recipe's per rank)")
    args = ap.parse_args(argv)
    for setting in args.setting:
        r = run(setting, args.steps, args.threads)
        print(f"{setting}: {r['samples']} samples, {r['micro_batches']} micro-batches, {r['real_tokens']} real tokens "
              f"(padded layout: {r['padded_tokens']}, {r['padded_tokens'] / r['real_tokens']:.2f}x)", flush=True)
        base = statistics.median(r["times"]["shared"])
        for layout in LAYOUTS:
            t = r["times"][layout]
            print(f"  {layout:7s} step median {statistics.median(t):6.2f} s ({statistics.median(t) / base:4.2f}x shared)"
                  f"  all {[round(x, 2) for x in t]}  saved activations peak {r['peaks'][layout] / 2**20:7.1f} MiB",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
