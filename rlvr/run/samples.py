"""`samples/step_NNNNNN.jsonl`: the first `logging.samples_per_step` samples of each step
(prompt, completion, answer, reward and its breakdown, advantage, length; for a multi-turn
episode its whole conversation, `messages`, turn by turn with roles, tool calls and their
results), for the dashboard's sample browser and for people reading the run folder."""

from __future__ import annotations

import os
import re

from rlvr.run.files import atomic_write_text, dumps, read_jsonl

SAMPLES_DIR = "samples"
MAX_SAMPLES_BYTES = 64 << 20  # a step's samples file over this is not read
_SAMPLES_FILE = re.compile(r"^step_(\d+)\.jsonl$")


def sample_records(step: int, prompts, completions, rewards, advantages: list[float], limit: int) -> list[dict]:
    """The first `limit` samples of a step as JSON-ready rows."""
    rows = []
    for c, r, a in list(zip(completions, rewards, advantages))[:limit]:
        p = prompts[c.prompt_index]
        rows.append({"step": step, "prompt": p.text, "completion": c.text, "answer": p.answer,
                     "reward": r.total, "scores": r.scores, "failures": r.failures, "parts": r.parts,
                     "advantage": a, "length": c.num_sampled, "finish_reason": c.finish_reason,
                     "weight_version": c.weight_version,
                     **({"messages": c.episode["messages"], "turns": c.episode["turns"],
                         "tool_calls": c.episode["tool_calls"], "truncated": c.episode["truncated"]}
                        if c.episode is not None else {}),
                     **({"agent": c.episode["agent"]} if c.episode is not None and "agent" in c.episode else {})})
    return rows


def write_samples(run_dir: str, step: int, records: list[dict]) -> None:
    """Write a step's samples to <run_dir>/samples/step_%06d.jsonl (atomically, one JSON per line)."""
    text = "".join(dumps(r) + "\n" for r in records)
    atomic_write_text(os.path.join(run_dir, SAMPLES_DIR, f"step_{int(step):06d}.jsonl"), text)


def sample_steps(run_dir: str) -> list[int]:
    """Steps with a samples file, ascending."""
    try:
        names = os.listdir(os.path.join(run_dir, SAMPLES_DIR))
    except OSError:  # none, or `samples` is not a folder
        return []
    return sorted(int(m.group(1)) for name in names if (m := _SAMPLES_FILE.match(name)))


def read_samples(run_dir: str, step: int | None = None, limit: int = 50) -> dict:
    """{"step": chosen step (latest when None), "steps": available steps, "samples": first `limit`}."""
    steps = sample_steps(run_dir)
    chosen = steps[-1] if step is None and steps else step
    samples = []
    if chosen is not None and chosen in steps:
        samples = read_jsonl(os.path.join(run_dir, SAMPLES_DIR, f"step_{chosen:06d}.jsonl"), MAX_SAMPLES_BYTES)
    return {"step": chosen, "steps": steps, "samples": samples[:max(0, limit)]}
