"""The model compatibility matrix: one full GRPO step per architecture family, for real.

For each family of `rlvr.models.FAMILIES` (a tiny random model built locally):

1. start one vLLM engine actor (its `ENGINE_QUIRKS` applied as in training) and one
   reward worker; check the engine's greedy tokens equal transformers' greedy
   `generate` on the same folder;
2. for each trainer backend (`fsdp2`, `deepspeed` ZeRO-2), 2 trainer ranks over gloo,
   with the driver's own functions (`rlvr.driver`): join the weight-sync group and
   push the starting weights; generate a GRPO batch (4 prompts x 4 samples, seeded),
   score it on the reward worker (math-verify plus the length verifier, so random
   completions get different rewards), group advantages, one `train_step` (AdamW,
   lr 1e-2 so that one step visibly moves a random model), `sync_weights`;
3. check, per backend:
   * the trainer's log-probs of the sampled tokens (in the train step, before the
     update) equal the engine's sampling log-probs (mean |diff| <= 1e-3 per token);
   * every parameter changed in the step (so the checks below can fail);
   * after the sync the engine's log-probs equal the trainer's on probe samples
     (`driver.verify_weights`, max |diff| <= sync.verify_tol = 1e-3);
   * the engine's greedy tokens equal transformers' greedy `generate` with the
     trainer's weights after the step (gathered from the ranks).

One engine serves both backends of a family (each backend first pushes the
starting weights back); one Ray cluster serves every family: the caller's when
Ray is already initialized (the tests' session cluster), else a private local one
(`address="local"`), stopped at the end.

Everything in fp32: any real mismatch is far above the float noise (~1e-6).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass, field

BACKENDS = ("fsdp2", "deepspeed")
GREEDY_TOKENS = 12  # new tokens compared greedily (prompts are ~20 tokens: longer than the 8-token windows)
LOGPROB_TOL = 1e-3  # fp32 on both sides; measured differences are ~1e-6
SEED = 0


class CheckFailed(AssertionError):
    """A matrix check that did not hold (the message says which and by how much)."""


@dataclass
class Row:
    """One family's result. `status`: pass | fail | skip (with `reason`)."""

    family: str
    model_type: str = ""
    quirks: dict = field(default_factory=dict)
    status: str = "pending"
    reason: str = ""
    engine_start_s: float | None = None
    load_match: bool | None = None  # engine greedy == transformers greedy before any sync
    backends: dict = field(default_factory=dict)  # backend -> per-step results (see _grpo_step)
    checks: list = field(default_factory=list)  # what was checked, one line each
    seconds: float = 0.0


def matrix_config(model_path: str, cache_dir: str, backend: str = "fsdp2"):
    """The recipe of one matrix step (validated like any recipe)."""
    from rlvr.config import load_recipe

    verifiers = "[{name: math}, {name: length, max_length: 12, cache_length: 8}]"
    return load_recipe(None, [
        f"model.path={model_path}", f"model.cache_dir={cache_dir}",
        "data.prompts_per_step=4",
        "rollout.n=4", "rollout.max_tokens=8", "rollout.num_threads=1", "rollout.cpus_per_engine=1",
        f"reward.verifiers={verifiers}", "reward.num_workers=1",
        f"trainer.backend={backend}", "trainer.num_workers=2", "trainer.num_threads=1", "trainer.total_steps=1",
        "trainer.lr=1e-2", "trainer.micro_batch_size=16",
        f"sync.verify_tol={LOGPROB_TOL}", "cluster.rpc_timeout_s=600",
    ])


def run_matrix(families=None, backends=BACKENDS, workdir: str | None = None, cache_dir: str = "~/.cache/rlvr",
               log=print) -> list[Row]:
    """Run every family in `families` (default: all of FAMILIES); returns one Row each.
    `log` gets one progress line per phase."""
    import ray

    from rlvr.models import FAMILIES
    from rlvr.tiny import build_tokenizer

    families = list(families or FAMILIES)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown model families {unknown}; known: {', '.join(FAMILIES)}")
    workdir = workdir or tempfile.mkdtemp(prefix="rlvr-matrix-")
    started = not ray.is_initialized()
    if started:
        log("[matrix] starting a private local Ray cluster")
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bars between the progress lines
        tokenizer = build_tokenizer()
        return [run_family(f, workdir, tokenizer, backends, cache_dir, log) for f in families]
    finally:
        if started:
            ray.shutdown()


def run_family(family: str, workdir: str, tokenizer, backends=BACKENDS, cache_dir: str = "~/.cache/rlvr",
               log=print) -> Row:
    """Build the family's tiny model and run its checks (module docstring); never raises
    for a failed check: the Row says what failed."""
    import ray

    from rlvr.models import build_tiny, engine_quirks, model_type

    row, start = Row(family), time.perf_counter()
    engine = rewarder = None
    try:
        path = build_tiny(family, os.path.join(workdir, family), seed=SEED, tokenizer=tokenizer)
        row.model_type, row.quirks = model_type(path) or "?", engine_quirks(path)
        cfg = matrix_config(path, cache_dir)
        ctx = _Context(path, cfg, os.path.join(workdir, f"{family}-run"))
        log(f"[matrix] {family}: starting vLLM engine (quirks: {row.quirks or 'none'})")
        engine, rewarder, row.engine_start_s = _start_engine_and_rewarder(cfg, path)
        expected = hf_greedy(ctx.hf, ctx.tokenizer, ctx.probe)
        got = _engine_greedy(engine, ctx.probe)
        row.load_match = got == expected
        row.checks.append("engine greedy == transformers greedy on load")
        if not row.load_match:
            raise CheckFailed(f"engine greedy tokens differ from transformers' on load: {got} vs {expected}")
        for i, backend in enumerate(backends):
            log(f"[matrix] {family}: GRPO step with {backend} (2 ranks, gloo)")
            row.backends[backend] = _grpo_step(ctx, backend, engine, rewarder, version=2 * i + 1)
            failed = row.backends[backend].get("error")
            if failed:
                raise CheckFailed(f"{backend}: {failed}")
        row.checks += ["trainer log-probs == engine sampling log-probs (sampled tokens)",
                       "every parameter changed", "engine log-probs == trainer's after sync (probe)",
                       "engine greedy == transformers greedy with the trainer's weights after sync"]
        row.status = "pass"
    except Exception as e:  # the matrix reports, it does not stop at the first failing family
        row.status, row.reason = "fail", f"{type(e).__name__}: {e}"[:500]
    finally:
        for actor in (engine, rewarder):
            if actor is not None:
                ray.kill(actor)
        row.seconds = time.perf_counter() - start
    for backend, res in row.backends.items():
        log(f"[matrix] {family} {backend}: " + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items() if v is not None))
    log(f"[matrix] {family}: {row.status} in {row.seconds:.0f} s{' - ' + row.reason if row.reason else ''}")
    return row


class _Context:
    """What every backend's step of one family shares: model, prompts, reference model."""

    def __init__(self, path: str, cfg, run_dir: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rlvr.config import ArithmeticConfig, DataConfig
        from rlvr.data import arithmetic_rows, render_prompts
        from safetensors.torch import load_file

        self.path, self.cfg, self.run_dir = path, cfg, run_dir
        os.makedirs(run_dir, exist_ok=True)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        rows = arithmetic_rows(ArithmeticConfig(num_train=16, num_eval=4), "train")
        prompts = render_prompts(rows, self.tokenizer, DataConfig())
        self.train, self.probe_prompts = prompts[:12], prompts[12:16]
        self.probe = [p.token_ids for p in self.probe_prompts]
        self.hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.start_state = load_file(os.path.join(path, "model.safetensors"))  # as saved: tied weights once


def _start_engine_and_rewarder(cfg, path: str):
    import ray

    from rlvr.recovery import start_reward_worker
    from rlvr.rollout.actors import create_engines

    t0 = time.perf_counter()
    [engine] = create_engines(cfg.rollout, path, SEED, "float32")
    seconds = time.perf_counter() - t0
    rewarder = start_reward_worker(cfg)
    ray.get(rewarder.ping.remote())
    return engine, rewarder, seconds


def _grpo_step(ctx: _Context, backend: str, engine, rewarder, version: int) -> dict:
    """One GRPO step with `backend` and its checks; returns figures, with "error" set when
    something failed (the step's own exception or a check)."""
    import ray
    import torch
    from ray.util.placement_group import remove_placement_group

    from rlvr import driver, rollouts
    from rlvr.cluster import runtime_env_for_actors
    from rlvr.metrics import Timer
    from rlvr.remote import wait_all
    from rlvr.trainer.group import create_trainers
    from rlvr.types import SamplingSpec

    cfg = dataclasses.replace(ctx.cfg, trainer=dataclasses.replace(ctx.cfg.trainer, backend=backend))
    out: dict = {"error": None}
    t0 = time.perf_counter()
    trainers, pg = [], None
    try:
        trainers, pg = create_trainers(cfg.trainer, cfg.algorithm, ctx.path, SEED,
                                       runtime_env=runtime_env_for_actors(cfg.model.cache_dir),
                                       temperature=cfg.rollout.temperature, norm_tokens=cfg.rollout.max_tokens)
        driver.setup_weight_sync(trainers, [engine], cfg, ctx.run_dir)
        driver.sync_weights(trainers, [engine], version, cfg)  # the starting weights (a previous backend moved them)
        spec = SamplingSpec(n=cfg.rollout.n, max_tokens=cfg.rollout.max_tokens, temperature=cfg.rollout.temperature,
                            seed=1000 + version)
        rollout = driver.collect_rollouts([engine], [rewarder], lambda k: ctx.train[:k], spec, cfg, Timer())
        totals = rollouts.shaped_rewards(rollout["completions"], rollout["rewards"], cfg)
        samples, stats, _ = rollouts.build_samples(rollout["prompts"], rollout["completions"], totals, cfg)
        out.update(reward_mean=float(totals.mean()), samples=len(samples))
        if not samples:
            raise CheckFailed("every group had equal rewards: nothing to train on")
        train = driver.train_step(trainers, samples, cfg)
        out.update(loss=train["loss"], grad_norm=train["grad_norm"], logprob_diff=train["train/logprob_diff"])
        if not train["train/logprob_diff"] <= LOGPROB_TOL:
            raise CheckFailed(f"trainer log-probs differ from the engine's sampling log-probs by "
                              f"{train['train/logprob_diff']:.3g} per token (> {LOGPROB_TOL})")
        driver.sync_weights(trainers, [engine], version + 1, cfg)
        out["verify_max_diff"] = driver.verify_weights(trainers, [engine], ctx.probe_prompts, version + 1, cfg)
        state = wait_all([t.full_state_dict.remote() for t in trainers], "full_state_dict", 600)[0]
        unchanged = [k for k, v in ctx.start_state.items() if k in state and torch.equal(v, state[k])]
        if unchanged or not set(ctx.start_state) <= set(state):
            raise CheckFailed(f"parameters unchanged after the step: {unchanged[:5]}, "
                              f"missing: {sorted(set(ctx.start_state) - set(state))[:5]}")
        stepped = _with_weights(ctx.hf, state)
        expected = hf_greedy(stepped, ctx.tokenizer, ctx.probe)
        got = _engine_greedy(engine, ctx.probe)
        out["greedy_match"] = got == expected
        out["greedy_changed"] = expected != hf_greedy(ctx.hf, ctx.tokenizer, ctx.probe)
        if not out["greedy_match"]:
            raise CheckFailed(f"engine greedy tokens differ from transformers' after the sync: {got} vs {expected}")
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"[:400]
    finally:
        for t in trainers:
            ray.kill(t)
        if pg is not None:
            remove_placement_group(pg)
    out["seconds"] = time.perf_counter() - t0
    return out


def _with_weights(model, state: dict):
    """A copy of `model` holding `state` (HF names; tied weights may come once or twice)."""
    import copy

    stepped = copy.deepcopy(model)
    missing, unexpected = stepped.load_state_dict(state, strict=False)
    tied = {k for k in missing if k == "lm_head.weight" and stepped.config.tie_word_embeddings}
    if set(missing) - tied or unexpected:
        raise CheckFailed(f"trainer weights do not fit the model: missing {missing}, unexpected {unexpected}")
    stepped.tie_weights()
    return stepped.eval()


def hf_greedy(model, tokenizer, prompts: list[list[int]], max_tokens: int = GREEDY_TOKENS) -> list[list[int]]:
    """The reference: transformers greedy `generate`, one unpadded prompt at a time."""
    import torch

    eos = model.generation_config.eos_token_id
    eos = sorted(set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id})
    out = []
    with torch.no_grad():
        for prompt in prompts:
            seq = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 do_sample=False, max_new_tokens=max_tokens, eos_token_id=eos,
                                 pad_token_id=tokenizer.pad_token_id)
            out.append(seq[0, len(prompt):].tolist())
    return out


def _engine_greedy(engine, prompts: list[list[int]], max_tokens: int = GREEDY_TOKENS) -> list[list[int]]:
    from rlvr.driver import generate
    from rlvr.types import SamplingSpec

    return [c.token_ids for c in generate([engine], prompts, SamplingSpec(n=1, max_tokens=max_tokens,
                                                                           temperature=0.0))]


# --------------------------------------------------------------------------- the table

def _mark(ok) -> str:
    return "-" if ok is None else ("ok" if ok else "FAIL")


def format_table(rows: list[Row], backends=BACKENDS) -> str:
    """A Markdown table: one line per family (what `rlvr doctor --models` prints)."""
    head = ["family", "model_type", "quirks applied", "engine start", *[f"GRPO step {b}" for b in backends],
            "greedy match after sync", "status", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        quirks = ", ".join(f"{k}={v}" for k, v in r.quirks.items()) or "none"
        start = "-" if r.engine_start_s is None else f"ok ({r.engine_start_s:.1f} s)"
        steps, greedy = [], []
        for b in backends:
            res = r.backends.get(b)
            if res is None:
                steps.append("-")
                continue
            steps.append("FAIL" if res["error"] else f"ok ({res['seconds']:.0f} s)")
            greedy.append(res.get("greedy_match"))
        greedy_cell = "-" if not greedy else ("ok" if all(greedy) and len(greedy) == len(backends) else "FAIL")
        status = r.status if not r.reason else f"{r.status}: {r.reason}"
        lines.append("| " + " | ".join([r.family, r.model_type, quirks, start, *steps, greedy_cell, status,
                                         f"{r.seconds:.0f}"]) + " |")
    return "\n".join(lines)
