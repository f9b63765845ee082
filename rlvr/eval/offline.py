"""A model (hub id, HF folder or rlvr checkpoint) through vLLM and the verifiers, outside of
training: what `rlvr eval` and `rlvr sample` (`rlvr.cli.evaluate`) run.

One process: the vLLM engine runs in it (in-process executor, as in the rollout actors)
and the verifiers in a reward-worker child process with the same hard timeouts as in
training (`rlvr.reward.worker.RewardWorker`). No Ray. Generation and scoring go through
the same `generate_and_score` as training, chunk by chunk (`--chunk` prompts at a time,
for the progress bar). `--data builtin:arithmetic` is the built-in task's held-out split,
the one training evaluates on.
"""

from __future__ import annotations

import os
import sys
import time

from rlvr.eval.metrics import final_answer


class _Engine:
    """A vLLM engine in this process, offering the rollout group's `stream` (one chunk)."""

    def __init__(self, engine):
        self.engine = engine

    def stream(self, prompts, spec, chunks_per_engine: int = 1):
        yield 0, list(prompts), self.engine.generate([p.token_ids for p in prompts], spec)


def generate_and_score_model(args, rows: list[dict]) -> tuple[list[list[dict]], list[str], dict]:
    """Every row's `args.n` completions (with `--tools`: multi-turn episodes), scored: (per-prompt
    lists of sample dicts, verifier keys, timings and multi-turn metrics)."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from rlvr.config import DataConfig, RolloutConfig
    from rlvr.data.prompts import chat_messages, has_chat_template
    from rlvr.agent.judge import with_judge
    from rlvr.reward.worker import LocalRewards, RewardWorker
    from rlvr.rollout.episodes import episode_metrics
    from rlvr.rollout.group import generate_and_score
    from rlvr.rollout.vllm_engine import VLLMEngine
    from rlvr.run.metrics import Timer
    from rlvr.types import SamplingSpec

    model = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    data_cfg = DataConfig(system_prompt=args.system_prompt, enable_thinking=args.enable_thinking,
                          apply_chat_template=not args.no_chat_template and has_chat_template(tokenizer))
    episodes = _Episodes(args, model, tokenizer, data_cfg) if args.tools else None
    prompts = episodes.prompts(rows) if episodes else _render(rows, tokenizer, data_cfg)
    judge = start_eval_judge(args)
    try:
        worker = RewardWorker(with_judge(eval_verifiers(args), judge), default_timeout_s=args.timeout_s)
    except BaseException:
        if judge is not None:
            judge.stop()
        raise
    t0 = time.perf_counter()
    print(f"[rlvr] starting vLLM on {args.model} ...", file=sys.stderr, flush=True)
    engine = _Engine(VLLMEngine(model, RolloutConfig(num_threads=args.threads), seed=args.seed, dtype=args.dtype))
    timings, timer = {"engine_start_s": time.perf_counter() - t0}, Timer()
    temperature = args.temperature if args.temperature is not None else (0.0 if args.n == 1 else 1.0)
    spec = SamplingSpec(n=args.n, max_tokens=args.max_tokens, temperature=temperature, top_p=args.top_p,
                        seed=args.seed)
    groups: list[list[dict]] = []
    everything = []
    try:
        with tqdm(total=len(prompts), desc="generate+score", unit="prompt", file=sys.stderr,
                  disable=not args.progress) as bar:
            for start in range(0, len(prompts), args.chunk):
                chunk = prompts[start:start + args.chunk]
                completions, rewards = generate_and_score(engine, LocalRewards(worker), chunk, spec, 1, timer,
                                                          episodes.runner if episodes else None)
                everything += completions
                by_prompt: list[list[dict]] = [[] for _ in chunk]
                for c, r in zip(completions, rewards):
                    by_prompt[c.prompt_index].append(_sample(c, r, worker.keys[0]))
                for i, group in enumerate(by_prompt):
                    messages = chunk[i].messages or chat_messages(rows[start + i], args.system_prompt)
                    for s in group:
                        s.update(prompt=chunk[i].text, reference=chunk[i].answer, row=start + i, messages=messages)
                    groups.append(group)
                bar.update(len(chunk))
    finally:
        worker.shutdown()
        if judge is not None:
            judge.stop()
        if episodes:
            episodes.tools.stop()
    timings.update(generate_s=timer.times.get("timing/generate", 0.0), score_s=timer.times.get("timing/reward", 0.0))
    if episodes:
        timings.update(tools_s=timer.times.get("timing/tools", 0.0), **episode_metrics(everything))
    return groups, list(worker.keys), timings


def _render(rows, tokenizer, data_cfg):
    from rlvr.data.prompts import render_prompts

    return render_prompts(rows, tokenizer, data_cfg)


class _Episodes:
    """`--tools` and friends: the tools (a tool worker in this process), the environment and the
    episode runner that training uses (`rlvr.rollout.episodes`)."""

    def __init__(self, args, model: str, tokenizer, data_cfg):
        from rlvr.config.checks import RecipeError
        from rlvr.config.rollout import MultiTurnConfig
        from rlvr.data.prompts import model_max_len, template_kwargs
        from rlvr.rollout.episodes import EpisodeRunner
        from rlvr.tools.env import env_factory
        from rlvr.tools.worker import LocalTools

        cfg = MultiTurnConfig(enabled=True, tools=[{"name": n.strip()} for n in args.tools.split(",") if n.strip()],
                              env=args.env, max_turns=args.max_turns, parser=args.parser,
                              tool_timeout_s=args.tool_timeout_s,
                              max_total_tokens=args.max_total_tokens or MultiTurnConfig.max_total_tokens)
        try:
            cfg.check()
        except RecipeError as e:
            raise SystemExit(f"rlvr {args.command}: {e}") from None
        self.system_prompt = data_cfg.system_prompt
        self.data_cfg, self.tokenizer = data_cfg, tokenizer
        self.make_env = env_factory(cfg.env, cfg.env_options)
        self.tools = LocalTools(cfg)
        max_len = model_max_len(model, {})
        self.runner = EpisodeRunner(cfg, self.make_env, self.tools, tokenizer,
                                    template_kwargs(data_cfg, self.tools.schemas), max_len)

    def prompts(self, rows):
        from rlvr.data.prompts import render_prompts

        return render_prompts(rows, self.tokenizer, self.data_cfg, self.tools.schemas,
                              lambda row: self.make_env().reset(row, self.system_prompt))


def _sample(c, r, first: str) -> dict:
    out = {"completion": c.text, "answer": final_answer(c.text), "length": c.num_sampled,
           "finish_reason": c.finish_reason, "reward": r.total, "scores": r.scores, "failures": r.failures,
           "correct": r.scores.get(first, 0.0) >= 1.0 and first not in r.failures}
    if c.episode is not None:  # a multi-turn episode: the whole conversation and its counts
        out["episode"] = c.episode
    return out


def resolve_model(path: str) -> str:
    """An rlvr checkpoint folder, an HF folder or a hub id; a run folder means its final checkpoint."""
    final = os.path.join(path, "checkpoints", "final")
    path = final if os.path.isdir(final) else os.path.expanduser(path)
    if os.path.isfile(os.path.join(path, "adapter_config.json")) and not os.path.isfile(os.path.join(path, "config.json")):
        raise SystemExit(f"rlvr: {path} holds a LoRA adapter only: merge it first "
                         f"(rlvr export {path} OUT --merge) and evaluate OUT")
    return path


def eval_verifiers(args) -> list[dict]:
    """`--verifiers` (a YAML list, as a recipe's `reward.verifiers`) or else `--reward`'s names;
    RecipeError naming the item for a bad one."""
    from rlvr.config.checks import require
    from rlvr.config.reward import VerifierItem, is_judge

    if getattr(args, "verifiers", None):
        from omegaconf import OmegaConf

        text = open(args.verifiers).read() if os.path.isfile(args.verifiers) else args.verifiers
        items = OmegaConf.to_container(OmegaConf.create(text))
        require(isinstance(items, list), "--verifiers", "must be a YAML list like [{name: math}]")
    else:
        items = [{"name": name.strip()} for name in args.reward.split(",") if name.strip()]
    for i, item in enumerate(VerifierItem.parse(items, "--verifiers")):
        require(not is_judge(item.name) or "url" in item.options or bool(getattr(args, "judge_model", None)),
                f"--verifiers[{i}].url", "a judge verifier needs a judge: give --judge-model or the verifier's url")
    return items


def start_eval_judge(args):
    """With `--judge-model`: a private local Ray cluster and the judge engine on it, served as in a
    run (`rlvr.agent.judge`); None without."""
    if not getattr(args, "judge_model", None):
        return None
    import ray

    from rlvr.config.reward import JudgeConfig
    from rlvr.agent.judge import start_judge

    judge = JudgeConfig(model=args.judge_model, num_threads=args.threads, max_tokens=args.judge_max_tokens,
                        dtype=args.dtype)
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"[rlvr] starting the judge engine on {args.judge_model} ...", file=sys.stderr, flush=True)
    return start_judge(judge, resolve_model(args.judge_model), args.seed)
