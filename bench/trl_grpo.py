"""TRL side of "rlvr vs TRL GRPOTrainer on identical work": run TRL's GRPOTrainer on CPU
with exactly the work described by a spec JSON, and time it.

    .venv-trl/bin/python bench/trl_grpo.py --spec SPEC.json --out OUT.json

Runs in its own venv (bench/trl_env.py builds `.venv-trl`); it does not import rlvr.
bench/compare_trl.py writes the spec and reads OUT.json.

Spec keys: model_dir, prompts_path (jsonl of {"prompt": chat-formatted text, "answer"}),
steps, prompts_per_step, group_size, max_new_tokens, ignore_eos, micro_batch_size, lr,
betas, weight_decay, grad_clip, dtype ("float32"), threads, temperature, beta (0.0),
seed, gradient_checkpointing, epsilon.

The work per optimizer step: `prompts_per_step` consecutive prompts of the file, in file
order, `group_size` completions each, exactly `max_new_tokens` new tokens each (EOS
suppressed), one generate call for the whole batch, then `prompts_per_step*group_size /
micro_batch_size` forward/backward micro-batches and one AdamW update.

TRL 1.16 semantics this relies on (trl/trainer/grpo_trainer.py, grpo_config.py of 1.16.0):
- `per_device_train_batch_size` counts completions, not prompts. With
  `generation_batch_size`/`steps_per_generation` unset, GRPOConfig.__post_init__ sets
  steps_per_generation = gradient_accumulation_steps and generation_batch_size =
  per_device_train_batch_size * world_size * steps_per_generation, i.e. one generation
  per optimizer step (grpo_config.py, "The current default effective batch size").
- The train dataloader yields the whole generation batch; RepeatSampler(mini_repeat_count=
  num_generations, batch_size=generation_batch_size/num_generations, repeat_count=
  num_iterations*steps_per_generation, shuffle=shuffle_dataset) repeats each prompt
  num_generations times in a row (trainer/utils.py RepeatSampler; grpo_trainer.py
  _get_train_sampler). With shuffle_dataset=False its index order is range(len(dataset)),
  so step i gets file rows [i*P, (i+1)*P) (rows past the last full chunk are dropped; a
  file shorter than steps*P starts over from row 0). The script checks this per step.
- `_prepare_inputs` generates once per steps_per_generation*num_iterations micro-steps,
  pads the whole generation batch (prompts left-padded, completions right-padded to the
  batch max), then `shuffle_sequence_dict` permutes the rows (TRL's own behaviour, kept:
  it changes which completions share a micro-batch, not the work) and splits it into
  steps_per_generation micro-batches of per_device_train_batch_size rows.
- Generation (use_vllm=False): `_generate_single_turn` left-pads the prompts and calls
  `unwrapped_model.generate(..., generation_config=self.generation_config)` once for the
  whole generation batch (the repeated prompts are separate rows); it then cuts each
  completion after its first EOS. GenerationConfig gets do_sample=True, temperature,
  top_p=1.0, top_k=0, eos_token_id=[tokenizer eos + model eos ids], updated by
  `generation_kwargs`.
- Old logprobs: computed only when gradient_accumulation_steps % (steps_per_generation *
  num_iterations) != 0 or with vLLM IS correction; with num_iterations=1 they are not
  (one fewer forward), and _compute_loss uses per_token_logps.detach() (ratio 1).
  With beta=0.0 there is no reference model and no ref forward.
- Loss: loss_type default "dapo": token-level clipped surrogate summed over completion
  tokens / active tokens of the whole generation batch (= token mean when all
  completions are equally long). Advantages: (r - group mean) / (group std + 1e-4)
  (scale_rewards="group"); zero-advantage groups are still trained.
- Log-probs: TRL patches the model forward with a chunked "fused LM head"
  (add_fused_lm_head, trainer/utils.py). Off CUDA/XPU (`_use_triton` false) it projects
  EVERY position (prompt positions too) through the LM head, i.e. the logits_to_keep
  saving is lost on CPU; it also computes per-token entropy. Backbone forward is over the
  full padded prompt+completion rows.
- Gradient checkpointing: TRL's _BaseConfig defaults gradient_checkpointing=True;
  transformers 5.2x renamed it activation_checkpointing (gradient_checkpointing is a
  deprecated alias copied into it when the new name is unset), so both are set here.

TRL / TrainingArguments defaults overridden here, and why:
- shuffle_dataset=False (default True): prompts in file order, same as the rlvr run.
- bf16=False (TRL default: True unless fp16): the spec says fp32.
- gradient_checkpointing / activation_checkpointing = spec (TRL default True).
- learning_rate = spec (TRL default 1e-6); adam_beta1/2, weight_decay, max_grad_norm = spec.
- lr_scheduler_type="constant", warmup_steps=0 (default "linear" decay): constant lr.
- optim="adamw_torch" (default "adamw_torch_fused" on torch>=2.8): plain torch.optim.AdamW,
  as rlvr's trainer builds it.
- max_completion_length = max_new_tokens (default 512); generation_kwargs
  {"min_new_tokens": max_new_tokens} when ignore_eos (EOS gets -inf until the last token,
  so every completion has exactly max_new_tokens tokens and none is cut).
- num_generations = group_size (default 8); per_device_train_batch_size = micro_batch_size;
  gradient_accumulation_steps = prompts_per_step*group_size/micro_batch_size;
  num_iterations=1 (default 1, set explicitly); beta = spec (default 0.0);
  epsilon = spec (default 0.2); temperature = spec (default 1.0).
- use_cpu=True, use_vllm=False: CPU and HF generate.
- report_to="none", logging_strategy="no", save_strategy="no", eval_strategy="no",
  disable_tqdm=True (defaults would log every 10 steps / print progress): no integrations,
  no checkpoints, no eval.
- max_steps = steps; seed = spec.

Measurements (wrappers on the trainer instance + a TrainerCallback):
- wall_s: on_step_begin (before the first micro-batch, i.e. before generation) to
  on_step_end (after clip + optimizer.step + zero_grad). The dataloader fetch of the
  prompt dicts just before on_step_begin is not counted (it is a list lookup).
- generate_s: time in `_generate_single_turn` (padding + model.generate + EOS cut).
  score_s: the rest of `_generate_and_score_completions` (decode, reward, advantages,
  padding). reward_s: inside `_calculate_rewards`. train_s = wall_s - generate_s
  (everything that is not generation: scoring, forward/backward, optimizer).
  optimizer_s: on_pre_optimizer_step to on_optimizer_step (AdamW step only).
- generated_tokens: sum of completion lengths returned by generation.
- trained_tokens: non-pad prompt+completion tokens of the micro-batches the loss saw;
  padded_tokens: rows x padded width of those micro-batches.
- peak_rss_mb: ru_maxrss of this process; peak_tree_rss_mb: psutil samples (every 0.1 s)
  of the RSS summed over this process and its children.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REQUIRED_KEYS = ("model_dir", "prompts_path", "steps", "prompts_per_step", "group_size", "max_new_tokens",
                 "ignore_eos", "micro_batch_size", "lr", "betas", "weight_decay", "grad_clip", "dtype", "threads",
                 "temperature", "beta", "seed", "gradient_checkpointing", "epsilon")


# ---------------------------------------------------------------- reward (mirror of rewards/math.py)
# rlvr's built-in `math` verifier, copied (rlvr is not installed here): score the text after
# the last </think> (an unclosed <think> scores 0), integer fast path, else math-verify
# parse/verify with 2 s signal timeouts; the gold answer is wrapped in \boxed{} when it has
# no LaTeX delimiter; an unparseable completion scores 0.0. Called in the main thread.
_LATEX_DELIMITERS = ("$", "\\boxed", "\\(", "\\[")
_GOLD_CACHE: dict[str, list] = {}


def _split_think(completion: str) -> str | None:
    if "</think>" in completion:
        return completion.rsplit("</think>", 1)[1]
    if "<think>" in completion:
        return None
    return completion


def _bare_int(text: str):
    import re

    text = text.strip()
    if len(text) > 2 and text[0] == "$" and text[-1] == "$":
        text = text.strip("$").strip()
    m = re.fullmatch(r"\\boxed\{\s*(-?\d{1,15})\s*\}|(-?\d{1,15})", text)
    return None if m is None else int(m[1] or m[2])


def math_score(completion: str, answer: str) -> float:
    from math_verify import parse, verify

    text = _split_think(completion)
    if text is None:
        return 0.0
    got, want = _bare_int(text), _bare_int(answer)
    if got is not None and want is not None:
        return float(got == want)
    if answer not in _GOLD_CACHE:
        gold_text = answer if any(d in answer for d in _LATEX_DELIMITERS) else "\\boxed{" + answer + "}"
        try:
            _GOLD_CACHE[answer] = parse(gold_text, parsing_timeout=2)
        except Exception:
            _GOLD_CACHE[answer] = []
    gold = _GOLD_CACHE[answer]
    if not gold:
        return 0.0
    try:
        pred = parse(text, parsing_timeout=2)
    except Exception:
        return 0.0
    if not pred:
        return 0.0
    try:
        return 1.0 if verify(gold, pred, timeout_seconds=2) else 0.0
    except Exception:
        return 0.0


# ---------------------------------------------------------------- memory sampling
class TreeRssSampler:
    """Peak RSS summed over this process and its children, sampled in a thread."""

    def __init__(self, interval_s: float = 0.1):
        import threading

        import psutil

        self.proc, self.interval_s, self.peak = psutil.Process(), interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:
                pass
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self):
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.peak / 2**20


# ---------------------------------------------------------------- main
def load_spec(path: str) -> dict:
    with open(path) as f:
        spec = json.load(f)
    missing = [k for k in REQUIRED_KEYS if k not in spec]
    if missing:
        raise SystemExit(f"trl_grpo: spec {path} lacks keys {missing}")
    if spec["dtype"] != "float32":
        raise SystemExit(f"trl_grpo: only dtype float32 is supported, got {spec['dtype']!r}")
    n = spec["prompts_per_step"] * spec["group_size"]
    if n % spec["micro_batch_size"]:
        raise SystemExit(f"trl_grpo: prompts_per_step*group_size ({n}) must be a multiple of micro_batch_size "
                         f"({spec['micro_batch_size']})")
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    spec = load_spec(args.spec)

    # before torch is imported: thread count, no GPU, no hub, no telemetry
    threads = str(spec["threads"])
    os.environ.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "CUDA_VISIBLE_DEVICES": "",
                       "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1", "WANDB_DISABLED": "true", "HF_HUB_DISABLE_TELEMETRY": "1"})
    import dataclasses
    import logging
    import resource
    import tempfile
    import warnings

    import psutil
    import torch

    torch.set_num_threads(spec["threads"])
    import accelerate
    import datasets
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' gradient_checkpointing renames
    rss = TreeRssSampler().start()
    t_proc0 = psutil.Process().create_time()

    rows = [json.loads(line) for line in open(spec["prompts_path"]) if line.strip()]
    P, G, M = spec["prompts_per_step"], spec["group_size"], spec["micro_batch_size"]
    if len(rows) < P:
        raise SystemExit(f"trl_grpo: {spec['prompts_path']} has {len(rows)} prompts, fewer than prompts_per_step={P}")
    train_dataset = datasets.Dataset.from_list([{"prompt": r["prompt"], "answer": str(r["answer"])} for r in rows])

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"], padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)

    rec: dict = {}  # per-step counters, reset at on_step_begin

    def reset_rec():
        rec.clear()
        rec.update(generate_s=0.0, rollout_s=0.0, reward_s=0.0, optimizer_s=0.0, generated_tokens=0,
                   completion_lengths=[], trained_tokens=0, padded_tokens=0, micro_batches=0, rows=0,
                   rewards=[], prompts=None)

    reset_rec()

    def reward_math(prompts, completions, answer, **kwargs):
        scores = [math_score(c, a) for c, a in zip(completions, answer)]
        rec["rewards"].extend(scores)
        return scores

    gc = bool(spec["gradient_checkpointing"])
    config_kwargs = dict(
        output_dir=tempfile.mkdtemp(prefix="trl_grpo_"),
        # work shape
        max_steps=spec["steps"],
        per_device_train_batch_size=M,
        gradient_accumulation_steps=P * G // M,
        num_generations=G,
        num_iterations=1,
        max_completion_length=spec["max_new_tokens"],
        generation_kwargs={"min_new_tokens": spec["max_new_tokens"]} if spec["ignore_eos"] else None,
        temperature=spec["temperature"],
        shuffle_dataset=False,
        # loss
        beta=spec["beta"],
        epsilon=spec["epsilon"],
        # optimizer
        learning_rate=spec["lr"],
        adam_beta1=spec["betas"][0],
        adam_beta2=spec["betas"][1],
        weight_decay=spec["weight_decay"],
        max_grad_norm=spec["grad_clip"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        # precision / device
        bf16=False,
        fp16=False,
        use_cpu=True,
        use_vllm=False,
        gradient_checkpointing=gc,
        seed=spec["seed"],
        # no integrations, checkpoints, eval, progress output
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
    )
    field_names = {f.name for f in dataclasses.fields(GRPOConfig)}
    if "activation_checkpointing" in field_names:  # transformers >= 5.2x: the new name wins
        config_kwargs["activation_checkpointing"] = gc
    grpo_args = GRPOConfig(**config_kwargs)

    trainer = GRPOTrainer(model=model, reward_funcs=[reward_math], args=grpo_args, train_dataset=train_dataset,
                          processing_class=tokenizer)

    # ---- wrappers (instance attributes shadow the methods)
    orig_generate = trainer._generate_single_turn
    orig_rollout = trainer._generate_and_score_completions
    orig_rewards = trainer._calculate_rewards
    orig_loss = trainer._compute_loss

    def timed_generate(*a, **kw):
        t = time.perf_counter()
        completion_ids, logprobs = orig_generate(*a, **kw)
        rec["generate_s"] += time.perf_counter() - t
        lengths = [len(ids) for ids in completion_ids]
        rec["generated_tokens"] += sum(lengths)
        rec["completion_lengths"].extend(lengths)
        return completion_ids, logprobs

    def timed_rollout(inputs):
        rec["prompts"] = [x["prompt"] for x in inputs]
        t = time.perf_counter()
        out = orig_rollout(inputs)
        rec["rollout_s"] += time.perf_counter() - t
        return out

    def timed_rewards(*a, **kw):
        t = time.perf_counter()
        out = orig_rewards(*a, **kw)
        rec["reward_s"] += time.perf_counter() - t
        return out

    def counting_loss(model_, inputs):
        pm, cm = inputs["prompt_mask"], inputs["completion_mask"]
        rec["trained_tokens"] += int(pm.sum() + cm.sum())
        rec["padded_tokens"] += pm.numel() + cm.numel()
        rec["micro_batches"] += 1
        rec["rows"] += pm.size(0)
        return orig_loss(model_, inputs)

    trainer._generate_single_turn = timed_generate
    trainer._generate_and_score_completions = timed_rollout
    trainer._calculate_rewards = timed_rewards
    trainer._compute_loss = counting_loss

    steps_out: list[dict] = []
    marks: dict = {}

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            marks["train_begin"] = time.time()

        def on_step_begin(self, args, state, control, **kw):
            reset_rec()
            marks["step"] = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, **kw):
            marks["opt"] = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kw):
            rec["optimizer_s"] += time.perf_counter() - marks["opt"]

        def on_step_end(self, args, state, control, **kw):
            wall = time.perf_counter() - marks["step"]
            i = len(steps_out)
            lengths = rec["completion_lengths"]
            # file rows this step must have used: [start, start+P), each G times in a row
            start = (i * P) % (len(rows) - len(rows) % P)
            expected = [rows[j]["prompt"] for j in range(start, start + P) for _ in range(G)]
            row = {
                "step": i,
                "wall_s": wall,
                "generate_s": rec["generate_s"],
                "train_s": wall - rec["generate_s"],
                "score_s": rec["rollout_s"] - rec["generate_s"],
                "reward_s": rec["reward_s"],
                "optimizer_s": rec["optimizer_s"],
                "generated_tokens": rec["generated_tokens"],
                "trained_tokens": rec["trained_tokens"],
                "padded_tokens": rec["padded_tokens"],
                "micro_batches": rec["micro_batches"],
                "rows": rec["rows"],
                "completions": len(lengths),
                "completion_len_min": min(lengths) if lengths else 0,
                "completion_len_max": max(lengths) if lengths else 0,
                "reward_mean": sum(rec["rewards"]) / len(rec["rewards"]) if rec["rewards"] else None,
                "prompt_rows": [start, start + P],
                "file_order": rec["prompts"] == expected,
                "torch_threads": torch.get_num_threads(),
            }
            steps_out.append(row)
            print(f"[trl] step {i}: wall {wall:.2f}s generate {row['generate_s']:.2f}s train {row['train_s']:.2f}s "
                  f"(optimizer {row['optimizer_s']:.3f}s) gen_tok {row['generated_tokens']} "
                  f"trained_tok {row['trained_tokens']} padded_tok {row['padded_tokens']} "
                  f"len {row['completion_len_min']}-{row['completion_len_max']} reward {row['reward_mean'] or 0:.3f} "
                  f"rows {start}..{start + P - 1} in order {row['file_order']}",
                  flush=True)

    trainer.add_callback(Timer())
    trainer.train()
    t_end = time.time()

    peak_tree = rss.stop()
    exact = all(s["completion_len_min"] == s["completion_len_max"] == spec["max_new_tokens"]
                and s["generated_tokens"] == P * G * spec["max_new_tokens"] for s in steps_out)
    walls = sorted(s["wall_s"] for s in steps_out)
    resolved = {k: getattr(grpo_args, k, None) for k in (
        "per_device_train_batch_size", "gradient_accumulation_steps", "generation_batch_size", "steps_per_generation",
        "num_generations", "num_iterations", "max_completion_length", "generation_kwargs", "loss_type",
        "scale_rewards", "beta", "epsilon", "epsilon_high", "temperature", "top_p", "top_k", "shuffle_dataset",
        "gradient_checkpointing", "activation_checkpointing", "bf16", "fp16", "optim", "learning_rate",
        "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay", "max_grad_norm", "lr_scheduler_type",
        "warmup_steps", "importance_sampling_level", "mask_truncated_completions", "use_vllm", "seed")}
    resolved = {k: (v.value if hasattr(v, "value") else v) for k, v in resolved.items()}
    out = {
        "system": "trl",
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "trl": trl.__version__,
                     "accelerate": accelerate.__version__, "datasets": datasets.__version__,
                     "math_verify": _version("math-verify")},
        "config": {k: v for k, v in config_kwargs.items() if k != "output_dir"},
        "resolved_config": resolved,
        "model_gradient_checkpointing": bool(getattr(trainer.model, "is_activation_checkpointing",
                                                     getattr(trainer.model, "is_gradient_checkpointing", False))),
        "num_params": sum(p.numel() for p in trainer.model.parameters()),
        "spec": spec,
        "steps": steps_out,
        "exact_lengths": exact,
        "file_order": all(s["file_order"] for s in steps_out),
        "median_wall_s": walls[len(walls) // 2] if walls else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_tree_rss_mb": peak_tree,
        "startup_s": marks["train_begin"] - t_proc0,
        "total_s": t_end - t_proc0,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, default=str)
    print(f"[trl] {len(steps_out)} steps, median wall {out['median_wall_s']:.2f}s, startup {out['startup_s']:.1f}s, "
          f"total {out['total_s']:.1f}s, peak rss {out['peak_rss_mb']:.0f} MB, exact lengths {exact}, "
          f"file order {out['file_order']} -> {args.out}", flush=True)
    if not exact or not out["file_order"]:
        print("[trl] WARNING: the work differed from the spec (see exact_lengths / file_order in the output)",
              file=sys.stderr)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
