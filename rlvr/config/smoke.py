"""`rlvr train|validate RECIPE --smoke`: the recipe shrunk to run here, on CPUs, in about a minute.

`smoke_config(cfg)` is a pure function of a loaded (not yet checked) recipe. It keeps what the
recipe *is*: the algorithm (preset, advantage, loss, aggregation, KL, DAPO's extras), the
placement, the trainer backend and ZeRO stage, the weight-sync method, LoRA (rank, alpha,
targets; `sync: auto` is pinned to what the recipe's engines would get), the verifiers, the
eval sets, the multi-turn / agent settings and the async staleness. It replaces:

* the model by the tiny random model of the same architecture family (`builtin:random-<family>`,
  built locally by the model matrix's builder, `rlvr.models.families.build_tiny`, and cached
  under `model.cache_dir`); the family comes from a local folder's `config.json` `model_type`,
  else from the name (Qwen3 -> qwen3, Qwen2.5 / QwQ / other Qwen -> qwen2, Llama -> llama,
  gemma-3 -> gemma3, Mistral -> mistral); an unknown one is a RecipeError naming model.path.
  Built-in models (`builtin:tiny`, `builtin:tiny-tools`) are kept;
* GPUs by CPUs: no GPU asks, tensor parallel 1, fractional CPUs that fit a 2-core private
  cluster, at most 2 trainer ranks and 1 engine, one thread each, bf16 -> fp32, no node
  pinning, only the semantic engine kwargs (`enable_prefix_caching`), `trainer.compile` off;
* the sizes: 2 steps of 4 prompts x at most 4 samples of at most 16 tokens, evaluation at the
  start and end only on 4 prompts, only the final checkpoint, no restarts;
* the data: a few rows of each source (`path#N`: a seeded sample); a file that is not there (e.g. an unprepared
  `data/gsm8k.jsonl`) or an `hf:` name (no network) becomes `builtin:arithmetic` rows;
* the run: `cluster.address` dropped (the smoke runs on whatever is here), `run.name` + `-smoke`,
  no service, no metric sinks, no plots, no resume.

It returns the new recipe and the lines to print (what was replaced; the data, when replaced).
"""

from __future__ import annotations

import copy
import json
import os
import re

from rlvr.config.checks import RecipeError
from rlvr.config.data import BUILTIN_ARITHMETIC, BUILTIN_SOURCES, source_problem, split_count
from rlvr.config.model import BUILTIN_MODELS, BUILTIN_RANDOM, TINY_FAMILIES, lora_sync_mode, random_family

STEPS, PROMPTS, SAMPLES, TOKENS = 2, 4, 4, 16
ROWS, EVAL_PROMPTS, MAX_LEN = 32, 4, 512  # rows taken of each source; tiny models' max_position_embeddings
ENGINE_KWARGS_KEPT = ("enable_prefix_caching",)  # the rest are GPU sizes (memory, lengths, parallelism)
DEFAULT_OUTPUT_DIR, DEFAULT_CACHE_DIR = "runs", "~/.cache/rlvr"
# HF model_type -> family; then names (checked in this order) -> family
MODEL_TYPES = {"qwen2": "qwen2", "qwen3": "qwen3", "llama": "llama", "gemma3": "gemma3", "gemma3_text": "gemma3",
               "mistral": "mistral", "qwen3_moe": "qwen3_moe"}
NAMES = ((r"qwen-?3.*-a\d+(\.\d+)?b", "qwen3_moe"), (r"qwen-?3", "qwen3"), (r"qwen|qwq", "qwen2"), (r"llama", "llama"), (r"gemma-?3", "gemma3"),
         (r"mistral", "mistral"))


def model_family(path: str) -> str | None:
    """The tiny family standing in for `path` (None: a built-in model, kept); RecipeError when unknown.

    >>> [model_family(p) for p in ("Qwen/Qwen3-8B", "Qwen/Qwen2.5-Math-7B", "meta-llama/Llama-3.2-3B-Instruct",
    ...                            "google/gemma-3-4b-it", "builtin:tiny", "builtin:random-mistral",
    ...                            "Qwen/Qwen3-30B-A3B-Instruct-2507")]
    ['qwen3', 'qwen2', 'llama', 'gemma3', None, 'mistral', 'qwen3_moe']
    """
    if random_family(path):
        return random_family(path)
    if path in BUILTIN_MODELS:
        return None
    config = os.path.join(os.path.expanduser(path), "config.json")
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as f:
                model_type = json.load(f).get("model_type")
        except (OSError, ValueError, AttributeError):
            model_type = None
        if model_type in MODEL_TYPES:
            return MODEL_TYPES[model_type]
        raise RecipeError("model.path", f"{path}: --smoke has no tiny model for model_type {model_type!r} "
                          f"(knows {', '.join(MODEL_TYPES)}); set model.path=builtin:random-<family> "
                          f"({', '.join(TINY_FAMILIES)})")
    name = path.rstrip("/").rpartition("/")[2]
    for pattern, family in NAMES:
        if re.search(pattern, name, re.IGNORECASE):
            return family
    raise RecipeError("model.path", f"{path}: --smoke cannot tell its architecture family from the name "
                      "(knows Qwen3, Qwen3-MoE (-A3B...), Qwen2/2.5, Llama, gemma-3, Mistral); set model.path=builtin:random-<family> "
                      f"({', '.join(TINY_FAMILIES)})")


def smoke_config(cfg, output_dir: str | None = None, cache_dir: str | None = None):
    """(the smoke recipe, the lines to print): see the module doc. `output_dir` / `cache_dir`:
    where the run and the tiny model go (default: the recipe's when relative, or absolute and here, else
    `runs` and `~/.cache/rlvr`). `cfg` is not changed."""
    cfg = copy.deepcopy(cfg)
    said: list[str] = []
    _model(cfg, said)
    _devices(cfg, said)
    _sizes(cfg)
    missing = _data(cfg)
    _run(cfg, said, output_dir, cache_dir)
    lines = ["[rlvr] smoke: " + "; ".join(said)]
    if missing:
        lines.append(f"[rlvr] smoke data: {', '.join(missing)} -> {BUILTIN_ARITHMETIC} rows instead "
                     f"(other sources: {ROWS} of their rows)")
    return cfg, lines


def load_smoke(path: str | None, overrides: list[str] = (), **kwargs):
    """`load_recipe` of the real recipe (typed, unchecked: its data may not be prepared here),
    `smoke_config`, then every check on the result. Returns (cfg, lines)."""
    from rlvr.config.recipe import load_recipe

    cfg, lines = smoke_config(load_recipe(path, overrides, check=False), **kwargs)
    cfg.check()
    return cfg, lines


def _model(cfg, said: list[str]) -> None:
    m, t = cfg.model, cfg.trainer
    family = model_family(m.path)
    if family is None:
        said.append(f"model {m.path} kept (built-in)")
    else:
        said.append(f"model {m.path} -> {BUILTIN_RANDOM}{family} (tiny random {family}, built locally)")
        m.path, m.trust_remote_code = BUILTIN_RANDOM + family, False
    if m.lora.rank and m.lora.sync == "auto":
        m.lora.sync = lora_sync_mode(m.lora, cfg.rollout)  # what the recipe's own engines get (adapter on GPUs)
        said.append(f"LoRA rank {m.lora.rank} kept (sync: {m.lora.sync}, as on the recipe's engines)")
    if "bfloat16" in (m.dtype, t.dtype):
        said.append("bf16 -> fp32")
        m.dtype = t.dtype = "float32"


def _devices(cfg, said: list[str]) -> None:
    t, r, c, mt = cfg.trainer, cfg.rollout, cfg.cluster, cfg.rollout.multi_turn
    gpus = t.num_workers * t.gpus_per_worker + r.num_engines * r.gpus_per_engine  # colocate: fractions of one GPU
    said.append(f"{t.num_workers} {t.backend}{_zero(t)} ranks + {r.num_engines} engines"
                + (f" on {gpus:g} GPUs" if gpus else "") + f" -> {min(t.num_workers, 2)} + 1 on CPUs"
                + f" ({c.placement})")
    t.gpus_per_worker = r.gpus_per_engine = 0.0
    t.num_workers, r.num_engines = min(t.num_workers, 2), 1
    t.num_threads = r.num_threads = 1
    # 2 x 0.5 + 0.25 (engine) + 0.25 (reward) + 0.25 (tools) + 0.25 (an eval set's reward worker) <= 2 cores
    t.cpus_per_worker, r.cpus_per_engine = 0.5, 0.25
    cfg.reward.cpus_per_worker = mt.tool_cpus_per_worker = 0.25
    if r.tensor_parallel_size > 1:
        said.append(f"tensor_parallel_size {r.tensor_parallel_size} -> 1")
        r.tensor_parallel_size = 1
    if t.resources or r.resources:
        said.append("node pinning (trainer/rollout.resources) dropped")
        t.resources, r.resources = {}, {}
    dropped = sorted(k for k in r.engine_kwargs if k not in ENGINE_KWARGS_KEPT)
    if dropped:
        said.append(f"engine_kwargs {', '.join(dropped)} dropped")
        r.engine_kwargs = {k: v for k, v in r.engine_kwargs.items() if k in ENGINE_KWARGS_KEPT}
    if t.compile != "off":
        said.append("trainer.compile off")
        t.compile = "off"
    if t.offload:
        said.append("trainer.offload kept (a no-op on CPU)")
    if cfg.sync.method == "broadcast" and gpus:
        said.append("sync broadcast over gloo (NCCL on GPUs)")
    if c.address:
        said.append("cluster.address dropped")
    c.address, c.num_cpus, c.temp_dir, c.wait_for_resources = None, None, None, False


def _zero(t) -> str:
    return f" ZeRO-{t.deepspeed.zero_stage}" if t.backend == "deepspeed" else ""


def _sizes(cfg) -> None:
    t, r, a, e, mt = cfg.trainer, cfg.rollout, cfg.algorithm, cfg.eval, cfg.rollout.multi_turn
    t.total_steps, t.warmup_steps, t.max_restarts = STEPS, 0, 0
    t.micro_batch_size = min(t.micro_batch_size, 8)
    t.updates_per_step = min(t.updates_per_step, 2)
    cfg.data.prompts_per_step = min(cfg.data.prompts_per_step, PROMPTS)
    cfg.data.mix_size = None if cfg.data.mix_size is None else min(cfg.data.mix_size, 4 * ROWS)
    r.n = min(r.n, SAMPLES)
    r.max_tokens = min(r.max_tokens, TOKENS)
    mt.max_total_tokens = min(mt.max_total_tokens, MAX_LEN)
    mt.tool_workers, mt.tool_procs = 1, min(mt.tool_procs, 2)
    r.agent_workers = 1
    cfg.reward.num_workers = 1
    cfg.reward.procs_per_worker = min(cfg.reward.procs_per_worker, 2)
    a.overlong.cache_len = min(a.overlong.cache_len, max(1, r.max_tokens // 2))
    a.dynamic_sampling.max_rounds = min(a.dynamic_sampling.max_rounds, 1)
    a.skip_uniform_groups = False  # a random model's rewards are all equal: train (and sync) on them anyway
    e.every, e.num_prompts = 0, min(e.num_prompts, EVAL_PROMPTS)
    e.max_tokens = None if e.max_tokens is None else min(e.max_tokens, TOKENS)
    e.sets = [_eval_set(dict(s)) for s in e.sets]
    cfg.checkpoint.every, cfg.checkpoint.save_final, cfg.checkpoint.resume = 0, True, None


def _eval_set(s: dict) -> dict:
    s["num_prompts"] = min(s.get("num_prompts") or EVAL_PROMPTS, EVAL_PROMPTS)
    s["n"] = min(s.get("n", 1), 2)
    s["max_tokens"] = min(s.get("max_tokens") or TOKENS, TOKENS)
    return s


def _source(spec: str, missing: list[str]) -> str:
    """A few rows of `spec`, or `builtin:arithmetic` rows when it cannot be read here."""
    path, count = split_count(spec)
    if path in BUILTIN_SOURCES or (not path.startswith("hf:") and source_problem(path) is None):
        return f"{path}#{min(count or ROWS, ROWS)}"
    missing.append(path if path.startswith("hf:") else f"{path} (not found)")
    return f"{BUILTIN_ARITHMETIC}#{ROWS}"


def _data(cfg) -> list[str]:
    """Each source replaced by a few of its rows; returns the ones that cannot be read here."""
    d, missing = cfg.data, []
    d.train_path = _source(d.train_path, missing)
    if d.eval_path is not None:
        d.eval_path = _source(d.eval_path, missing)
    mix = []
    for item in d.mix_items():
        spec = _source(item.path + (f"#{item.count}" if item.count else ""), missing)
        mix.append({"path": spec} if item.weight is None else {"path": split_count(spec)[0], "weight": item.weight})
    d.train_mix = mix
    cfg.eval.sets = [{**s, "path": _source(str(s["path"]), missing)} for s in cfg.eval.sets]
    if missing and all(split_count(p)[0] in BUILTIN_SOURCES for p in _all_sources(cfg)):
        d.prompt_key, d.messages_key, d.answer_key = "prompt", "messages", "answer"  # the built-in rows' fields
    return missing


def _all_sources(cfg) -> list[str]:
    d = cfg.data
    return ([d.train_path] + ([d.eval_path] if d.eval_path else []) + [m["path"] for m in d.train_mix]
            + [s["path"] for s in cfg.eval.sets])


def _usable(path: str) -> bool:
    """A relative folder (made under the current one), or an absolute one that exists and is
    writable here (a shared file system that is not mounted here is not)."""
    if not os.path.isabs(os.path.expanduser(path)):
        return True
    path = os.path.expanduser(path)
    return os.path.isdir(path) and os.access(path, os.W_OK)


def _run(cfg, said: list[str], output_dir: str | None, cache_dir: str | None) -> None:
    said.append(f"{STEPS} steps x {cfg.data.prompts_per_step} prompts x {cfg.rollout.n} samples of "
                f"<= {cfg.rollout.max_tokens} tokens, eval at start and end, final checkpoint only")
    cfg.run.name = cfg.run.name if cfg.run.name.endswith("-smoke") else f"{cfg.run.name}-smoke"
    for section, key, given, default in ((cfg.run, "output_dir", output_dir, DEFAULT_OUTPUT_DIR),
                                         (cfg.model, "cache_dir", cache_dir, DEFAULT_CACHE_DIR)):
        if given is not None:
            setattr(section, key, given)
        elif not _usable(getattr(section, key)):
            said.append(f"{key} {getattr(section, key)} (not here) -> {default}")
            setattr(section, key, default)
    if cfg.sync.dir is not None:
        cfg.sync.dir = None
    if cfg.service.enabled:
        said.append("service off")
        cfg.service.enabled = False
    if cfg.logging.sinks:
        said.append(f"sinks {', '.join(cfg.logging.sinks)} off")
        cfg.logging.sinks = []
    cfg.logging.plots = False
