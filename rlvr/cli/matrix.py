"""The model compatibility matrix: one full GRPO step per architecture family, for real.

For each family of `rlvr.models.families.FAMILIES` (a tiny random model built locally):

1. start one vLLM engine actor (its `ENGINE_QUIRKS` applied as in training) and one
   reward worker; check the engine's greedy tokens equal transformers' greedy
   `generate` on the same folder;
2. for each trainer backend (`fsdp2`, `deepspeed` ZeRO-2), 2 trainer ranks over gloo,
   with the run's own groups (`rlvr.rollout.group`, `rlvr.trainer.group`, `rlvr.sync.group`):
   join the weight sync and push the starting weights; generate a GRPO batch (4 prompts x
   4 samples, seeded), score it on the reward worker (math-verify plus the length verifier,
   so random completions get different rewards), group advantages, one `trainer.train`
   (AdamW, lr 1e-2 so that one step visibly moves a random model), `sync.push`;
3. check, per backend:
   * the trainer's log-probs of the sampled tokens (in the train step, before the
     update) equal the engine's sampling log-probs (mean |diff| <= 1e-3 per token);
   * every parameter changed in the step (so the checks below can fail);
   * after the sync the engine's log-probs equal the trainer's on probe samples
     (`WeightSync.verify`, max |diff| <= sync.verify_tol = 1e-3);
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

    from rlvr.models.families import FAMILIES
    from rlvr.models.tiny import build_tokenizer

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
    from rlvr.models.families import build_tiny
    from rlvr.rollout.quirks import engine_quirks, model_type

    row, start = Row(family), time.perf_counter()
    rollouts = rewards = None
    try:
        path = build_tiny(family, os.path.join(workdir, family), seed=SEED, tokenizer=tokenizer)
        row.model_type, row.quirks = model_type(path) or "?", engine_quirks(path)
        cfg = matrix_config(path, cache_dir)
        ctx = _Context(path, cfg, os.path.join(workdir, f"{family}-run"))
        log(f"[matrix] {family}: starting vLLM engine (quirks: {row.quirks or 'none'})")
        rollouts, rewards, row.engine_start_s = _start_engine_and_rewarder(cfg, path)
        expected = hf_greedy(ctx.hf, ctx.tokenizer, ctx.probe)
        got = _engine_greedy(rollouts, ctx.probe)
        row.load_match = got == expected
        row.checks.append("engine greedy == transformers greedy on load")
        if not row.load_match:
            raise CheckFailed(f"engine greedy tokens differ from transformers' on load: {got} vs {expected}")
        for i, backend in enumerate(backends):
            log(f"[matrix] {family}: GRPO step with {backend} (2 ranks, gloo)")
            row.backends[backend] = _grpo_step(ctx, backend, rollouts, rewards, version=2 * i + 1)
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
        for group in (rollouts, rewards):
            if group is not None:
                group.stop()
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
        from rlvr.data.prompts import render_prompts
        from rlvr.data.rows import arithmetic_rows
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
    from rlvr.reward.group import RewardGroup
    from rlvr.rollout.group import RolloutGroup

    t0 = time.perf_counter()
    rollouts = RolloutGroup(cfg.rollout, path, SEED, "float32", timeout_s=cfg.cluster.rpc_timeout_s)
    seconds = time.perf_counter() - t0
    return rollouts, RewardGroup(list(cfg.reward.verifiers), cfg.reward, timeout_s=cfg.cluster.rpc_timeout_s), seconds


def _grpo_step(ctx: _Context, backend: str, rollouts, rewards, version: int) -> dict:
    """One GRPO step with `backend` and its checks; returns figures, with "error" set when
    something failed (the step's own exception or a check)."""
    import torch

    from rlvr.cluster.env import runtime_env_for_actors
    from rlvr.loop.samples import build_samples, shaped_rewards
    from rlvr.rollout.group import generate_and_score
    from rlvr.run.metrics import Timer
    from rlvr.sync.group import WeightSync
    from rlvr.trainer.group import TrainerGroup
    from rlvr.types import SamplingSpec

    cfg = dataclasses.replace(ctx.cfg, trainer=dataclasses.replace(ctx.cfg.trainer, backend=backend))
    out: dict = {"error": None}
    t0 = time.perf_counter()
    trainer = None
    try:
        trainer = TrainerGroup(cfg.trainer, cfg.algorithm, ctx.path, SEED,
                               runtime_env=runtime_env_for_actors(cfg.model.cache_dir),
                               temperature=cfg.rollout.temperature, norm_tokens=cfg.rollout.max_tokens,
                               timeout_s=cfg.cluster.rpc_timeout_s)
        sync = WeightSync(cfg.sync, trainer, rollouts, ctx.run_dir, temperature=cfg.rollout.temperature,
                          timeout_s=cfg.cluster.rpc_timeout_s)
        sync.setup()
        sync.push(version)  # the starting weights (a previous backend moved them)
        spec = SamplingSpec(n=cfg.rollout.n, max_tokens=cfg.rollout.max_tokens, temperature=cfg.rollout.temperature,
                            seed=1000 + version)
        prompts = ctx.train[:cfg.data.prompts_per_step]
        completions, scored = generate_and_score(rollouts, rewards, prompts, spec, 1, Timer())
        totals = shaped_rewards(completions, scored, cfg.algorithm, cfg.rollout.max_tokens)
        samples, stats, _ = build_samples(prompts, completions, totals, cfg.algorithm)
        out.update(reward_mean=float(totals.mean()), samples=len(samples))
        if not samples:
            raise CheckFailed("every group had equal rewards: nothing to train on")
        train = trainer.train(samples)
        out.update(loss=train["loss"], grad_norm=train["grad_norm"], logprob_diff=train["train/logprob_diff"])
        if not train["train/logprob_diff"] <= LOGPROB_TOL:
            raise CheckFailed(f"trainer log-probs differ from the engine's sampling log-probs by "
                              f"{train['train/logprob_diff']:.3g} per token (> {LOGPROB_TOL})")
        sync.push(version + 1)
        out["verify_max_diff"] = sync.verify(ctx.probe_prompts)
        state = trainer.full_state_dict()
        unchanged = [k for k, v in ctx.start_state.items() if k in state and torch.equal(v, state[k])]
        if unchanged or not set(ctx.start_state) <= set(state):
            raise CheckFailed(f"parameters unchanged after the step: {unchanged[:5]}, "
                              f"missing: {sorted(set(ctx.start_state) - set(state))[:5]}")
        stepped = _with_weights(ctx.path, state)
        expected = hf_greedy(stepped, ctx.tokenizer, ctx.probe)
        got = _engine_greedy(rollouts, ctx.probe)
        out["greedy_match"] = got == expected
        out["greedy_changed"] = expected != hf_greedy(ctx.hf, ctx.tokenizer, ctx.probe)
        if not out["greedy_match"]:
            raise CheckFailed(f"engine greedy tokens differ from transformers' after the sync: {got} vs {expected}")
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"[:400]
    finally:
        if trainer is not None:
            trainer.stop()
    out["seconds"] = time.perf_counter() - t0
    return out


def _with_weights(path: str, state: dict):
    """The model of `path` holding `state` (checkpoint names and layout, as the trainer sends
    them), loaded back through `from_pretrained` as any checkpoint would be."""
    import torch
    from transformers import AutoModelForCausalLM

    from rlvr.run.checkpoint import write_hf_model

    with tempfile.TemporaryDirectory(prefix="rlvr-matrix-weights-") as tmp:
        write_hf_model(tmp, path, state)
        stepped, info = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"]:
        raise CheckFailed(f"trainer weights do not fit the model: missing {sorted(info['missing_keys'])[:5]}, "
                          f"unexpected {sorted(info['unexpected_keys'])[:5]}")
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


def _engine_greedy(rollouts, prompts: list[list[int]], max_tokens: int = GREEDY_TOKENS) -> list[list[int]]:
    from rlvr.types import SamplingSpec

    return [c.token_ids for c in rollouts.generate(prompts, SamplingSpec(n=1, max_tokens=max_tokens, temperature=0.0))]


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
