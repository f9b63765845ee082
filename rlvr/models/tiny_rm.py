"""A tiny sequence-classification reward model for tests and examples, built locally from the
built-in tiny model (`rlvr.models.tiny`) and cached.

What it learns, and why that: a Bradley-Terry head on the tiny model's backbone, trained
for a few seconds on the arithmetic task's train split to score a *well-formed* answer (the
reference sum, digits only) above a *malformed* one (the same answer wrapped in words, or
words alone). Learning arithmetic correctness itself does not fit in seconds here: the same
set-up scoring the right sum above a wrong sum reached 65% held-out pairwise accuracy after
34 s on this 2-core CPU (lr 1e-3; lr 3e-3 stayed at chance), far from a verdict a test can
assert on. The well-formedness verdict is deterministic enough: on held-out prompts the
model ranks the well-formed answer first on (nearly) every pair (`ranking_accuracy`).

The input format is the policy's: the chat-templated prompt followed by the completion text
(`template: plain` in the verifier). Cached under `cache_dir` in a folder named by a hash of
the base model's build info and `BUILDER_VERSION`, written atomically (like the tiny model).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile

from rlvr.run.files import replace_folder

BUILDER_VERSION = 1
STEPS = 30
BATCH = 16  # pairs per step
LR = 1e-3
_WORDS = "the answer is so total sum result number value final think".split()


def malformed(answer: str, rng: random.Random) -> str:
    """A wrong-shaped completion for `answer`: words around it, or words alone.

    >>> malformed("42", random.Random(0)) != "42"
    True
    """
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
    return rng.choice([f"{words} {answer}", f"{answer} {words}", words])


def pairs(model_dir: str, split: str, num: int, seed: int) -> list[tuple[str, str]]:
    """(well-formed text, malformed text) pairs of `split`'s prompts, as the verifier reads them."""
    from transformers import AutoTokenizer

    from rlvr.config import ArithmeticConfig, DataConfig
    from rlvr.data.prompts import render_prompts
    from rlvr.data.rows import arithmetic_rows

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(seed)
    prompts = render_prompts(arithmetic_rows(ArithmeticConfig(), split), tokenizer, DataConfig())[:num]
    return [(p.text + p.answer, p.text + malformed(p.answer, rng)) for p in prompts]


def _scores(model, tokenizer, texts: list[str]):
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=True)
    return model(**batch).logits[:, 0]


def build_tiny_reward_model(out_dir: str, base_dir: str, seed: int = 0) -> str:
    """Train the tiny RM on `base_dir`'s backbone into `out_dir` (atomically); its path."""
    import torch
    from transformers import AutoTokenizer, Qwen2ForSequenceClassification

    from rlvr.models.tiny import _torch_threads

    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(out_dir), prefix=f".{os.path.basename(out_dir)}.tmp-")
    try:
        os.chmod(tmp, 0o755)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        train = pairs(base_dir, "train", 4096, seed)
        rng = random.Random(seed)
        with _torch_threads(1), torch.random.fork_rng():
            torch.manual_seed(seed)
            model = Qwen2ForSequenceClassification.from_pretrained(base_dir, num_labels=1)
            model.config.pad_token_id = tokenizer.pad_token_id
            opt = torch.optim.AdamW(model.parameters(), lr=LR)
            for _ in range(STEPS):
                batch = rng.sample(train, BATCH)
                r = _scores(model, tokenizer, [good for good, _ in batch] + [bad for _, bad in batch])
                loss = -torch.nn.functional.logsigmoid(r[:BATCH] - r[BATCH:]).mean()  # Bradley-Terry
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "rlvr_tiny_rm.json"), "w") as f:
            json.dump({"builder_version": BUILDER_VERSION, "base": _base_key(base_dir), "steps": STEPS,
                       "final_loss": round(loss.item(), 4)}, f, indent=2)
        replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ranking_accuracy(rm_dir: str, split: str = "eval", num: int = 200, seed: int = 1) -> float:
    """How often the RM scores the well-formed answer above the malformed one on `split`'s prompts."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    held = pairs(rm_dir, split, num, seed)
    with torch.inference_mode():
        good = _scores(model, tokenizer, [g for g, _ in held])
        bad = _scores(model, tokenizer, [b for _, b in held])
    return float((good > bad).float().mean())


def _base_key(base_dir: str) -> str:
    with open(os.path.join(base_dir, "rlvr_tiny.json"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def ensure_tiny_reward_model(base_dir: str, cache_dir: str, seed: int = 0) -> str:
    """The tiny RM on `base_dir` (a built tiny model), built once and cached under `cache_dir`."""
    from rlvr.run.files import build_once

    key = hashlib.sha256(f"{BUILDER_VERSION}:{_base_key(base_dir)}:{seed}".encode()).hexdigest()[:16]
    out = os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), f"tiny-rm-{key}")
    return build_once(out, "rlvr_tiny_rm.json", lambda p: build_tiny_reward_model(p, base_dir, seed))
