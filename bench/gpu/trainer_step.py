"""One trainer step on one GPU with the repo's trainer: tokens/s and MFU.

    python -m bench.gpu.trainer_step [--micro 4 8 16 32] [--steps 3] [--gradient-checkpointing] [--profile]
                                     [--compare-plain [eager|compiled]]

`rlvr.trainer.worker.TrainerWorker`, one rank (NCCL world size 1), FSDP2 backend,
`trainer.dtype=bfloat16` (fp32 master weights and AdamW state, bf16 compute through
FSDP2's MixedPrecisionPolicy), on a random-init Qwen3-0.6B-shaped model (hidden 1024,
28 layers, 16 heads, 8 KV heads, head_dim 128, FFN 3072, vocab 151936, tied
embeddings) built here from a transformers `Qwen3Config` and saved to a temp folder,
so nothing is downloaded. The batch: `--seqs` (64) sequences of `--prompt` (256)
random prompt tokens + `--completion` (1024) random completion tokens, GRPO's
default loss (PPO clip, token mean), one optimizer update per step.

Micro-batch sizes are tried in the order given (ascending: the first out-of-memory
ends the sweep, since an OOM can leave FSDP's state half way). For each size: one
warm-up step, then `--steps` timed steps (wall clock around `train_step`, which ends
in a host sync). MFU = 6 * params * tokens / time / peak, with `--peak-tflops` 989
(H100 SXM bf16 dense). The 6*N*tokens count includes the tied embedding/LM-head
matrix for every token, although the trainer runs the LM head on completion columns
only, and leaves out attention's own FLOPs; both are printed separately.

`--compare-plain` then runs the same work (same model folder, samples, micro-batch counts,
loss and normaliser) in a plain PyTorch loop (`bench.gpu.plain_step`: eager, or with each
decoder layer compiled) after the trainer has been freed, and prints rlvr's step time as a
ratio of it for every micro-batch size (below 1: rlvr is faster).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import statistics
import tempfile
import time


def build_model(out: str, args) -> int:
    """Random-init Qwen3 in fp32 (what the trainer loads) plus a small tokenizer."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from rlvr.models.tiny import build_tokenizer

    tok = build_tokenizer(out)  # the trainer reads pad/eos ids from the folder's tokenizer
    cfg = Qwen3Config(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, head_dim=args.head_dim,
                      intermediate_size=args.intermediate, vocab_size=args.vocab, tie_word_embeddings=True,
                      max_position_embeddings=40960, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen3ForCausalLM(cfg)
    n = sum(p.numel() for p in model.parameters())  # tied: counted once
    model.save_pretrained(out, safe_serialization=True)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return n


def make_samples(args):
    from rlvr.types import TrainSample

    rng = random.Random(0)
    return [TrainSample([rng.randrange(args.vocab) for _ in range(args.prompt)],
                        [rng.randrange(args.vocab) for _ in range(args.completion)],
                        rng.uniform(-1, 1), [-1.0] * args.completion) for _ in range(args.seqs)]


def profile_step(worker, samples, denominator: float, num_micro: int) -> dict:
    """One step under torch.profiler: wall time, summed GPU kernel time, top kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        worker.train_step(samples, denominator, num_micro)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    from torch.autograd import DeviceType

    # kernel-level events only (an aten op's self device time repeats its kernels')
    kernels = sorted((e for e in prof.key_averages() if e.device_type == DeviceType.CUDA and e.self_device_time_total > 0),
                     key=lambda e: -e.self_device_time_total)
    if not kernels:  # no events typed CUDA: take the ones that are not aten ops
        kernels = sorted((e for e in prof.key_averages() if e.self_device_time_total > 0 and not e.key.startswith("aten::")),
                         key=lambda e: -e.self_device_time_total)
    busy = sum(e.self_device_time_total for e in kernels) / 1e6
    groups: dict[str, float] = {}
    for e in kernels:
        name = e.key.lower()
        if any(k in name for k in ("gemm", "nvjet", "cutlass", "cublas", "sm90_xmma")) and "sdpa" not in name:
            group = "matmul"
        elif any(k in name for k in ("sdpa", "flash", "fmha", "attention", "cudnn")):
            group = "attention"
        elif "nccl" in name:
            group = "nccl"
        elif "reduce" in name or "softmax" in name or "logsumexp" in name:
            group = "reductions"
        elif "copy" in name or "memcpy" in name or "memset" in name or "cat" in name:
            group = "copies/casts"
        else:
            group = "elementwise/other"
        groups[group] = groups.get(group, 0.0) + e.self_device_time_total / 1e6
    top = [(e.key[:100], round(e.self_device_time_total / 1e6, 4), e.count) for e in kernels[:20]]
    print(f"[bench] profile: step {wall:.3f}s under the profiler, GPU kernels {busy:.3f}s "
          f"({100 * busy / wall:.0f}% of the step)", flush=True)
    for group, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"[bench]   {group:<18} {seconds:7.3f}s ({100 * seconds / busy:.0f}% of kernel time)", flush=True)
    for name, seconds, count in top:
        print(f"[bench]   {seconds:8.4f}s {count:6d}x  {name}", flush=True)
    return {"wall_s": wall, "gpu_kernel_s": busy, "groups": groups, "top": top}


def compare_plain(args, model_dir: str, samples, tokens: int, results: dict) -> None:
    """`--compare-plain`: the same micro-batch sizes in `bench.gpu.plain_step`; rlvr's ratio to each."""
    import torch

    from bench.gpu.plain_step import PlainStep
    from transformers import AutoTokenizer

    cuda = torch.cuda.is_available()
    t0 = time.perf_counter()
    plain = PlainStep(model_dir, args.dtype, compiled=args.compare_plain == "compiled",
                      pad_id=AutoTokenizer.from_pretrained(model_dir).pad_token_id or 0)
    print(f"[bench] plain PyTorch ({args.compare_plain}) setup {time.perf_counter() - t0:.1f}s", flush=True)
    for r in [r for r in results["runs"] if not r.get("oom")]:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for i in range(1 + args.steps):
            dt, loss, norm = plain.step(samples, r["num_micro"])
            print(f"[bench] plain micro {r['micro']} step {i}{' (warm-up, compiles)' if not i else ''}: {dt:.3f}s "
                  f"loss {loss:.4f} grad_norm {norm:.3f}", flush=True)
            times.append(dt) if i else None
        step = statistics.median(times)
        r["plain"] = {"mode": args.compare_plain, "step_s": step, "tokens_per_s": tokens / step,
                      "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
        print(f"[bench] micro {r['micro']}: rlvr {r['step_s']:.3f}s vs plain {args.compare_plain} {step:.3f}s: "
              f"rlvr/plain = {r['step_s'] / step:.2f} ({'rlvr faster' if r['step_s'] < step else 'plain faster'}), "
              f"plain peak memory {r['plain']['peak_mem_gib'] or 0:.1f} GiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--micro", type=int, nargs="*", default=[4, 8, 16, 32])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seqs", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--completion", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--profile", action="store_true",
                        help="after each size's timed steps, one more step under torch.profiler: GPU busy time and top kernels")
    parser.add_argument("--model-dir", default=None, help="build the model here, or reuse it if already there")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--compare-plain", nargs="?", const="eager", choices=("eager", "compiled"), default=None,
                        help="also time the same work in a plain PyTorch loop (bench.gpu.plain_step) and print the ratio")
    args = parser.parse_args()

    import torch
    import torch.distributed as dist

    from rlvr.config import AlgorithmConfig, TrainerConfig
    from rlvr.cluster.env import free_port
    from rlvr.trainer.worker import TrainerWorker

    cuda = torch.cuda.is_available()
    results = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
               "args": vars(args), "runs": []}
    with tempfile.TemporaryDirectory(prefix="rlvr-bench-model-") as tmp:
        model_dir = args.model_dir or tmp
        t0 = time.perf_counter()
        if os.path.isfile(os.path.join(model_dir, "config.json")):
            from safetensors import safe_open

            with safe_open(os.path.join(model_dir, "model.safetensors"), framework="pt") as f:
                params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
        else:
            os.makedirs(model_dir, exist_ok=True)
            params = build_model(model_dir, args)
        print(f"[bench] model: {params / 1e6:.1f}M parameters (tied embedding {args.vocab * args.hidden / 1e6:.1f}M), "
              f"built and saved in {time.perf_counter() - t0:.1f}s", flush=True)
        samples = make_samples(args)
        tokens = args.seqs * (args.prompt + args.completion)
        cfg = TrainerConfig(backend="fsdp2", num_workers=1, micro_batch_size=max(args.micro), dtype=args.dtype,
                            gradient_checkpointing=args.gradient_checkpointing, total_steps=1000)
        worker = TrainerWorker(0, 1, cfg, AlgorithmConfig(), 0)
        t0 = time.perf_counter()
        worker.setup(("127.0.0.1", free_port()), model_dir)
        print(f"[bench] trainer setup {time.perf_counter() - t0:.1f}s on {worker.device}", flush=True)
        # token_mean: the global normaliser is the number of completion tokens
        denominator = float(sum(len(s.completion_ids) for s in samples))
        try:
            for micro in args.micro:
                num_micro = -(-args.seqs // micro)
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                try:
                    times = []
                    for i in range(1 + args.steps):
                        if cuda:
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        out = worker.train_step(samples, denominator, num_micro)
                        if cuda:
                            torch.cuda.synchronize()
                        dt = time.perf_counter() - t0
                        if i:
                            times.append(dt)
                        print(f"[bench] micro {micro} step {i}{' (warm-up)' if not i else ''}: {dt:.3f}s "
                              f"loss {out['loss']:.4f} grad_norm {out['grad_norm']:.3f}", flush=True)
                except torch.OutOfMemoryError as e:
                    print(f"[bench] micro {micro}: out of memory ({str(e).splitlines()[0][:160]}); sweep ends",
                          flush=True)
                    results["runs"].append({"micro": micro, "oom": True})
                    break
                step = statistics.median(times)
                flops = 6 * params * tokens
                attn = 6 * args.layers * args.seqs * 2 * args.heads * args.head_dim * (args.prompt + args.completion) ** 2 / 2
                r = {"micro": micro, "num_micro": num_micro, "step_s": step, "step_s_all": times,
                     "tokens_per_s": tokens / step, "tflops_6nd": flops / step / 1e12,
                     "mfu_6nd": flops / step / (args.peak_tflops * 1e12),
                     "mfu_6nd_plus_causal_attention": (flops + attn) / step / (args.peak_tflops * 1e12),
                     "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
                if args.profile and cuda:
                    r["profile"] = profile_step(worker, samples, denominator, num_micro)
                results["runs"].append(r)
                print(f"[bench] micro {micro}: step {step:.3f}s, {r['tokens_per_s']:.0f} tokens/s, "
                      f"{r['tflops_6nd']:.1f} TFLOP/s (6ND), MFU {100 * r['mfu_6nd']:.1f}% "
                      f"({100 * r['mfu_6nd_plus_causal_attention']:.1f}% with causal attention), "
                      f"peak memory {r['peak_mem_gib'] or 0:.1f} GiB", flush=True)
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        if args.compare_plain:
            del worker
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            compare_plain(args, model_dir, samples, tokens, results)
    results["params"] = params
    results["tokens_per_step"] = tokens
    ok = [r for r in results["runs"] if not r.get("oom")]
    if ok:
        best = min(ok, key=lambda r: r["step_s"])
        print(f"[bench] best: micro {best['micro']}: {best['step_s']:.3f}s/step, {best['tokens_per_s']:.0f} tokens/s, "
              f"MFU {100 * best['mfu_6nd']:.1f}% (6*{params / 1e6:.0f}M*{tokens} / step / {args.peak_tflops:g} TFLOP/s)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
