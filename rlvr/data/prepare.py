r"""Public math datasets as rlvr rows: the answer extraction of `rlvr data prepare`, pure functions.

Each dataset has a *preparer*: `(raw row, index) -> (row, None)` or `(None, why it is skipped)`.
A prepared row is `{"prompt": str, "answer": str, "dataset": NAME, "id": ...}` (or `messages`
instead of `prompt` when the dataset's prompt is a chat of several messages), plus a few of the
dataset's own fields (MATH's `level`/`type`, NuminaMath's `source` as `subset`). The dataset name
is written as `dataset`, not `source`: the loader sets `metadata.source` to the file it read.

    gsm8k          openai/gsm8k                   question; answer = the text after the last `#### `, commas dropped
    math           hendrycks MATH, competition_math   problem; answer = the last \boxed{...} / \fbox{...} of solution
    numinamath     AI-MO/NuminaMath-CoT / -TIR     problem; answer = the last \boxed{...} of solution
                                                  (its `messages` hold the worked solution: never used as the prompt)
    dapo-math-17k  BytedTsinghua-SIA/DAPO-Math-17k  prompt (a chat list); answer = reward_model.ground_truth
    deepscaler     agentica-org/DeepScaleR-Preview-Dataset  problem; answer (else the last \boxed{} of solution)
    generic        any: --prompt-field / --answer-field (dotted paths), optionally --extract boxed|gsm8k

A row whose answer (or prompt) cannot be found is skipped, with a reason that is counted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
GSM8K_MARK = "#### "
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")

Result = tuple["dict | None", "str | None"]


def last_boxed(text: str) -> str | None:
    r"""The content of the last `\boxed{...}` (or `\fbox{...}`) in `text`, nested braces and all;
    `\boxed 5` (no braces) gives the token after it. None when there is none, or it is empty.

    >>> last_boxed(r"so $x = \boxed{\frac{1}{2}}$.")
    '\\frac{1}{2}'
    >>> last_boxed(r"first \boxed{1}, then \boxed{(1, 2)}")
    '(1, 2)'
    >>> last_boxed(r"The answer is $\boxed 5$."), last_boxed(r"\fbox{$x^{2}$}")
    ('5', 'x^{2}')
    >>> last_boxed(r"no box here"), last_boxed(r"\boxed{}"), last_boxed(r"\boxed{unclosed")
    (None, None, None)
    >>> last_boxed(r"\boxed{\text{(A)}\ \{1,2\}}")
    '\\text{(A)}\\ \\{1,2\\}'
    """
    for match in reversed(list(BOXED.finditer(text))):
        rest = text[match.end():]
        body = rest.lstrip()
        if body.startswith("{"):
            content = _braced(body)
        elif rest[:1].isspace():  # `\boxed 5`: the next token
            content = re.match(r"[^\s$]*", body).group(0).rstrip(".,;")
        else:
            continue
        if content is None:
            return None
        content = content.strip()
        if len(content) > 2 and content[0] == content[-1] == "$" and "$" not in content[1:-1]:
            content = content[1:-1].strip()  # `\fbox{$2\sqrt{2}$}`
        return content or None
    return None


def _braced(text: str) -> str | None:
    """The content of the brace group that `text` starts with (escaped braces `\\{` do not count)."""
    depth, i = 0, 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[1:i]
        i += 1
    return None


def gsm8k_answer(text: str) -> str | None:
    """GSM8K's final answer: what follows the last `#### `, thousands commas removed.

    >>> gsm8k_answer("48/2 = <<48/2=24>>24 clips\\n#### 72"), gsm8k_answer("... #### 1,234"), gsm8k_answer("no mark")
    ('72', '1234', None)
    >>> gsm8k_answer("#### 1,000,000.5 "), gsm8k_answer("####   ")
    ('1000000.5', None)
    """
    head, mark, tail = text.rpartition(GSM8K_MARK.strip())
    if not mark:
        return None
    answer = THOUSANDS.sub("", tail.strip())
    return answer or None


def dotted(row: Any, path: str) -> Any:
    """The value at a dotted path (`reward_model.ground_truth`; list items by index: `prompt.0.content`);
    None when any part is missing.

    >>> dotted({"a": {"b": [{"c": 3}]}}, "a.b.0.c"), dotted({"a": 1}, "a.b"), dotted({"x.y": 2}, "x.y")
    (3, None, 2)
    """
    if isinstance(row, dict) and path in row:
        return row[path]
    value = row
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, (list, tuple)) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value


def _text(value: Any) -> str | None:
    """A string or number as answer text (stripped); None for anything else or empty."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    return text or None


def _prompt_fields(value: Any) -> dict | None:
    """`{"prompt": str}` from a string; a chat list: `{"prompt": its content}` when it is one
    user message, else `{"messages": [...]}`; None when it is neither.

    >>> _prompt_fields([{"role": "user", "content": "2+2?"}]), _prompt_fields("  ")
    ({'prompt': '2+2?'}, None)
    """
    if isinstance(value, str):
        return {"prompt": value} if value.strip() else None
    if not isinstance(value, (list, tuple)) or not value:
        return None
    messages = []
    for m in value:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            return None
        messages.append({"role": m["role"], "content": m["content"]})
    if len(messages) == 1 and messages[0]["role"] == "user":
        return {"prompt": messages[0]["content"]}
    return {"messages": messages}


def _row(name: str, prompt: Any, answer: str | None, row_id: Any, extra: dict | None = None,
         why_no_answer: str = "no answer") -> Result:
    fields = _prompt_fields(prompt)
    if fields is None:
        return None, "no prompt"
    if answer is None:
        return None, why_no_answer
    out = {**fields, "answer": answer, "dataset": name, "id": row_id}
    out.update({k: v for k, v in (extra or {}).items() if v is not None})
    return out, None


def prepare_gsm8k(raw: dict, index: int) -> Result:
    r"""openai/gsm8k: `question`, `answer` (worked solution ending `#### 72`).

    >>> prepare_gsm8k({"question": "Q?", "answer": "3 * 4 = 12\n#### 12"}, 0)
    ({'prompt': 'Q?', 'answer': '12', 'dataset': 'gsm8k', 'id': 0}, None)
    """
    solution = raw.get("answer")
    answer = gsm8k_answer(solution) if isinstance(solution, str) else None
    return _row("gsm8k", raw.get("question"), answer, raw.get("id", index), why_no_answer="no '#### ' answer")


def prepare_math(raw: dict, index: int) -> Result:
    r"""Hendrycks MATH (competition_math): `problem`, `solution` (the answer in its last `\boxed{}`),
    `level`, `type`; a variant's own `answer` field is used when the solution has no box.

    >>> prepare_math({"problem": "1/2?", "solution": r"It is $\boxed{\frac12}$.", "level": "Level 1", "type": "Algebra"}, 3)[0]
    {'prompt': '1/2?', 'answer': '\\frac12', 'dataset': 'math', 'id': 3, 'level': 'Level 1', 'type': 'Algebra'}
    """
    solution = raw.get("solution")
    answer = (last_boxed(solution) if isinstance(solution, str) else None) or _text(raw.get("answer"))
    return _row("math", raw.get("problem"), answer, raw.get("unique_id", raw.get("id", index)),
                {"level": raw.get("level"), "type": raw.get("type")}, "no \\boxed answer in the solution")


def prepare_numinamath(raw: dict, index: int) -> Result:
    r"""AI-MO/NuminaMath-CoT and NuminaMath-TIR: `problem`, `solution` (the answer in its last
    `\boxed{}`), `messages` (the problem and the worked solution: not used), CoT's `source`
    (olympiads, cn_k12, ...) kept as `subset`.

    >>> prepare_numinamath({"source": "olympiads", "problem": "P", "solution": r"\boxed{(1, 2)}", "messages": []}, 1)[0]
    {'prompt': 'P', 'answer': '(1, 2)', 'dataset': 'numinamath', 'id': 1, 'subset': 'olympiads'}
    """
    solution = raw.get("solution")
    answer = last_boxed(solution) if isinstance(solution, str) else None
    return _row("numinamath", raw.get("problem"), answer, raw.get("id", index), {"subset": raw.get("source")},
                "no \\boxed answer in the solution")


def prepare_dapo(raw: dict, index: int) -> Result:
    """BytedTsinghua-SIA/DAPO-Math-17k: `prompt` (a chat list), `reward_model.ground_truth`,
    `extra_info.index` (the id), `data_source`.

    >>> prepare_dapo({"prompt": [{"role": "user", "content": "Solve"}], "reward_model": {"ground_truth": "34"},
    ...               "extra_info": {"index": "a1"}}, 0)[0]
    {'prompt': 'Solve', 'answer': '34', 'dataset': 'dapo-math-17k', 'id': 'a1'}
    """
    answer = _text(dotted(raw, "reward_model.ground_truth"))
    row_id = dotted(raw, "extra_info.index")
    return _row("dapo-math-17k", raw.get("prompt"), answer, index if row_id is None else row_id,
                why_no_answer="no reward_model.ground_truth")


def prepare_deepscaler(raw: dict, index: int) -> Result:
    r"""agentica-org/DeepScaleR-Preview-Dataset: `problem`, `answer`, `solution` (its last `\boxed{}`
    when `answer` is empty).

    >>> prepare_deepscaler({"problem": "P", "answer": " 5 ", "solution": ""}, 2)[0]
    {'prompt': 'P', 'answer': '5', 'dataset': 'deepscaler', 'id': 2}
    """
    solution = raw.get("solution")
    answer = _text(raw.get("answer")) or (last_boxed(solution) if isinstance(solution, str) else None)
    return _row("deepscaler", raw.get("problem"), answer, raw.get("id", index), why_no_answer="no answer")


EXTRACT: dict[str, Callable[[str], str | None]] = {"boxed": last_boxed, "gsm8k": gsm8k_answer}


def generic_preparer(prompt_field: str, answer_field: str, extract: str | None = None,
                     id_field: str | None = None, name: str = "generic") -> Callable[[dict, int], Result]:
    r"""A preparer for any dataset: the prompt (a string or a chat list) and the answer at dotted
    paths; `extract` (boxed | gsm8k) takes the answer out of a worked solution.

    >>> prep = generic_preparer("q.text", "sol", extract="boxed")
    >>> prep({"q": {"text": "Q"}, "sol": r"so \boxed{7}"}, 4)[0], prep({"q": {"text": "Q"}, "sol": "7"}, 5)[1]
    ({'prompt': 'Q', 'answer': '7', 'dataset': 'generic', 'id': 4}, 'no boxed answer in sol')
    """
    if extract is not None and extract not in EXTRACT:
        raise ValueError(f"unknown extract {extract!r} (have {', '.join(EXTRACT)})")

    def prepare(raw: dict, index: int) -> Result:
        value = dotted(raw, answer_field)
        answer = _text(value)
        if extract is not None:
            answer = EXTRACT[extract](value) if isinstance(value, str) else None
        why = f"no {extract} answer in {answer_field}" if extract else f"no {answer_field}"
        row_id = dotted(raw, id_field) if id_field else raw.get("id")
        return _row(name, dotted(raw, prompt_field), answer, index if row_id is None else row_id, why_no_answer=why)

    return prepare


PREPARERS: dict[str, Callable[[dict, int], Result]] = {
    "gsm8k": prepare_gsm8k, "math": prepare_math, "numinamath": prepare_numinamath,
    "dapo-math-17k": prepare_dapo, "deepscaler": prepare_deepscaler,
}
DATASET_NAMES = (*PREPARERS, "generic")
# the hub id each name is usually prepared from (for help texts and `rlvr convert`)
HUB_IDS = {"gsm8k": "openai/gsm8k:main", "math": "hendrycks/competition_math",
           "numinamath": "AI-MO/NuminaMath-CoT", "dapo-math-17k": "BytedTsinghua-SIA/DAPO-Math-17k",
           "deepscaler": "agentica-org/DeepScaleR-Preview-Dataset"}


@dataclass
class Tally:
    """What preparing a dataset did: rows written, rows skipped by reason."""

    written: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        """
        >>> t = Tally(7); t.skipped.update(["no answer", "no answer", "no prompt"]); t.summary()
        '7 written, 3 skipped (no answer: 2, no prompt: 1)'
        """
        total = sum(self.skipped.values())
        reasons = ", ".join(f"{why}: {n}" for why, n in self.skipped.most_common())
        return f"{self.written} written, {total} skipped" + (f" ({reasons})" if total else "")


def prepare_rows(preparer: Callable[[dict, int], Result], raws: Iterable[Any], tally: Tally,
                 limit: int | None = None) -> Iterator[dict]:
    """The prepared rows of `raws` (at most `limit`), counting what is written and skipped in `tally`.

    >>> t = Tally()
    >>> [r["answer"] for r in prepare_rows(prepare_gsm8k, [{"question": "q", "answer": "#### 1"}, {"question": "q"}], t)]
    ['1']
    >>> t.summary()
    "1 written, 1 skipped (no '#### ' answer: 1)"
    """
    for index, raw in enumerate(raws):
        if limit is not None and tally.written >= limit:
            return
        row, why = preparer(raw, index) if isinstance(raw, dict) else (None, "not an object")
        if row is None:
            tally.skipped[why] += 1
            continue
        tally.written += 1
        yield row
