"""Evaluation metrics, pure functions: pass@k (the unbiased estimator), maj@k, a completion's
final answer, and which completions `rlvr sample` keeps.

"Correct" means the first verifier (the accuracy verifier) scored >= 1, as in training.
maj@k: the most frequent final answer among the first k completions (the text after a
think block: the last `\\boxed{}`, else the last number, else the whole stripped text;
ties go to the answer seen first), correct if that answer's completions were.
"""

from __future__ import annotations

import math
import re
from collections import Counter

KEEP_MODES = ("best", "all-correct", "threshold")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021):
    1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), pass_at_k(4, 0, 2)
    (0.25, 1.0, 0.0)
    """
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def final_answer(text: str) -> str:
    """The answer a completion commits to, for majority voting (see the module doc).

    >>> final_answer("<think>7?</think> so \\\\boxed{12}."), final_answer("it is 3, no 4"), final_answer(" x ")
    ('12', '4', 'x')
    """
    from rlvr.reward.builtin.format import split_think

    answer, _ = split_think(text)
    answer = answer if answer is not None else ""
    boxed = _last_boxed(answer)
    if boxed is not None:
        return boxed.strip()
    numbers = re.findall(r"-?\d+(?:\.\d+)?", answer)
    return numbers[-1] if numbers else answer.strip()


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def majority_correct(answers: list[str], correct: list[bool]) -> bool:
    """Whether the most frequent answer (first seen wins ties) was a correct one."""
    counts = Counter(answers)
    top = max(answers, key=lambda a: (counts[a], -answers.index(a)))
    return any(ok for a, ok in zip(answers, correct) if a == top)


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks = [k for k in (2 ** i for i in range(20)) if k <= n]
    return ks + ([n] if n not in ks else [])


def summarize(groups: list[list[dict]], keys: list[str]) -> dict:
    """Metrics over prompts, each a list of its scored completions ({correct, answer, length,
    scores, failures})."""
    n = min(len(g) for g in groups)
    out: dict = {"prompts": len(groups), "n": n,
                 "accuracy": _mean([s["correct"] for g in groups for s in g]),
                 "response_length/mean": _mean([s["length"] for g in groups for s in g])}
    for k in k_values(n):
        out[f"pass@{k}"] = _mean([pass_at_k(len(g), sum(s["correct"] for s in g), k) for g in groups])
        out[f"maj@{k}"] = _mean([majority_correct([s["answer"] for s in g[:k]], [s["correct"] for s in g[:k]])
                                 for g in groups])
    for key in keys:
        out[f"reward/{key}/mean"] = _mean([s["scores"].get(key, 0.0) for g in groups for s in g])
        out[f"reward/{key}/failures"] = sum(key in s["failures"] for g in groups for s in g)
    return out


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else 0.0


def keep_samples(group: list[dict], mode: str, threshold: float) -> list[dict]:
    """Which completions of one prompt `rlvr sample` keeps: `best` (the highest total reward,
    if it is correct), `all-correct`, or `threshold` (total >= threshold). Equal texts once."""
    if mode == "best":
        best = max(group, key=lambda s: s["reward"]) if group else None
        chosen = [best] if best is not None and best["correct"] else []
    elif mode == "all-correct":
        chosen = [s for s in group if s["correct"]]
    elif mode == "threshold":
        chosen = [s for s in group if s["reward"] >= threshold]
    else:
        raise ValueError(f"--keep must be one of {KEEP_MODES}, got {mode!r}")
    seen, out = set(), []
    for s in chosen:
        if s["completion"] not in seen:
            seen.add(s["completion"])
            out.append(s)
    return out
