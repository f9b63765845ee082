"""`rlvr rewards new NAME`: a new verifier plugin package that passes `rlvr rewards check` as made.

    rlvr-NAME/
      pyproject.toml          the `rlvr.rewards` entry point: NAME = "rlvr_NAME:Class"
      rlvr_NAME/__init__.py   the verifier (a class with one option), with a doctest
      samples.jsonl           samples with `expect` scores, for `rlvr rewards check --samples`
      tests/test_NAME.py      its doctest and the conformance kit on samples.jsonl
      README.md               what to edit, how to install and check it
"""

from __future__ import annotations

import os
import re

NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "@dist@"
version = "0.1.0"
description = "rlvr reward verifier @name@"
requires-python = ">=3.10"
dependencies = ["rlvr"]

# The line that makes rlvr find the verifier by name: name = "module:attr".
[project.entry-points."rlvr.rewards"]
@name@ = "@module@:@cls@"

[tool.setuptools]
packages = ["@module@"]

[tool.pytest.ini_options]
pythonpath = ["."]
'''

MODULE = '''"""rlvr reward verifier `@name@` (registered in pyproject.toml; edit `__call__`).

The sample a verifier gets (`rlvr.types.RewardInput`):
  prompt      the prompt as the model saw it: the chat-templated text (system prompt and
              template tokens included) unless the recipe sets data.apply_chat_template: false
  completion  the model's text (a multi-turn episode: its final answer)
  answer      the dataset row's reference answer, as a string
  metadata    the dataset row's other fields, plus "source" (its file and row); multi-turn
              episodes add "messages", the whole conversation
Return a float or `Score(value, parts={...})`. A wrong answer is a low value, not a
failure: set `Score(..., failure="why")` only when the sample cannot be scored at all.
"""

from __future__ import annotations

from rlvr.types import RewardInput, Score


class @cls@:
    """1.0 when the final answer (the text after the last `</think>`) equals the reference,
    ignoring surrounding whitespace (and case, unless `case_sensitive`). Part `has_answer`:
    0.0 when a `<think>` block was never closed.

    >>> check = @cls@()
    >>> check(RewardInput(prompt="Capital of France?", completion="<think>easy</think> Paris", answer="paris"))
    Score(value=1.0, parts={'has_answer': 1.0}, failure=None)
    >>> check(RewardInput(prompt="Capital of France?", completion="<think>hmm", answer="paris")).value
    0.0
    """

    def __init__(self, *, case_sensitive: bool = False):
        if not isinstance(case_sensitive, bool):  # options come from the recipe: check them here
            raise TypeError(f"@name@: option case_sensitive must be true/false, got {case_sensitive!r}")
        self.case_sensitive = case_sensitive

    def __call__(self, sample: RewardInput) -> Score:
        text = sample.completion
        if "</think>" in text:
            text = text.rsplit("</think>", 1)[1]
        elif "<think>" in text:
            return Score(0.0, {"has_answer": 0.0})
        got, want = text.strip(), sample.answer.strip()
        if not self.case_sensitive:
            got, want = got.casefold(), want.casefold()
        return Score(float(got == want), {"has_answer": 1.0})
'''

SAMPLES = [
    '{"prompt": "Capital of France?", "completion": "<think>easy</think> Paris", "answer": "paris", "expect": 1}',
    '{"prompt": "Capital of France?", "completion": "<think>hmm</think> Lyon", "answer": "paris", "expect": 0}',
    '{"prompt": "Capital of Japan?", "completion": "  TOKYO\\n", "answer": "Tokyo", "expect": 1}',
    '{"prompt": "Capital of Japan?", "completion": "<think>never closed", "answer": "Tokyo", "expect": 0}',
    '{"prompt": "6 times 7?", "completion": "42", "answer": 42, "metadata": {"source": "train.jsonl row 7"}, '
    '"expect_min": 1}',
]

TEST = '''"""The plugin's own tests: `pytest` in this folder (also after `pip install .`)."""

import doctest
import os

import @module@
from rlvr.reward.conformance import check_verifier, format_table
from rlvr.reward.samples import read_samples

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_doctests():
    assert doctest.testmod(@module@).failed == 0


def test_conformance_kit():
    """What `rlvr rewards check @module@:@cls@ --samples samples.jsonl` runs."""
    results = check_verifier("@module@:@cls@", samples=read_samples(os.path.join(HERE, "samples.jsonl")), n_timing=5)
    assert not [r for r in results if r.failed], format_table(results)
'''

README = '''# @dist@: the `@name@` reward verifier for rlvr

Made by `rlvr rewards new @name@`. Edit `@module@/__init__.py` (the verifier; its module
docstring says what a sample holds) and `samples.jsonl` (samples of your domain with the
score each must get: `expect`, or `expect_min` / `expect_max`).

```bash
pip install -e .                                   # into the environment rlvr runs in (every Ray node)
rlvr rewards list                                  # @name@  @module@:@cls@  @dist@ 0.1.0 ...
rlvr rewards check @name@ --samples samples.jsonl  # the conformance kit; exit 1 on any FAIL
rlvr rewards score @name@ --completion "Paris" --answer paris
pytest                                             # the doctest and the kit (run it in CI)
```

In a recipe: `reward.verifiers: [{name: @name@, weight: 1.0, case_sensitive: false}]`.
'''


def class_name(name: str) -> str:
    """`units_match` -> `UnitsMatch`.

    >>> class_name("units_match"), class_name("judge2")
    ('UnitsMatch', 'Judge2')
    """
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def new_package(name: str, parent: str = ".") -> str:
    """Write the package of verifier `name` into `parent/rlvr-NAME` and return that folder.
    Raises ValueError for a bad name or when the folder exists."""
    if not NAME.fullmatch(name) or name.endswith("_") or "__" in name:
        raise ValueError(f"verifier name {name!r}: use lower-case letters, digits and single underscores, "
                         "starting with a letter (e.g. units_match)")
    fields = {"name": name, "module": f"rlvr_{name}", "cls": class_name(name), "dist": "rlvr-" + name.replace("_", "-")}
    root = os.path.join(parent, fields["dist"])
    if os.path.exists(root):
        raise ValueError(f"{root} already exists")
    files = {"pyproject.toml": PYPROJECT, os.path.join(fields["module"], "__init__.py"): MODULE,
             "samples.jsonl": "\n".join(SAMPLES) + "\n", os.path.join("tests", f"test_{name}.py"): TEST,
             "README.md": README}
    for rel, template in files.items():
        for key, value in fields.items():
            template = template.replace(f"@{key}@", value)
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(template)
    return root
