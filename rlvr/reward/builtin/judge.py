"""Built-in `judge` verifier: an LLM judge behind an OpenAI-compatible endpoint scores each sample.

The judge is asked with a prompt `template` in which `{prompt}`, `{completion}` and `{answer}`
are replaced by the sample's (plain replacement, so other braces in the template are kept);
its answer is read by a verdict parser:

- `choices` (a mapping, e.g. `{"CORRECT": 1.0, "WRONG": 0.0}`): the first of the choices that
  appears in the answer as a whole word gives the score;
- otherwise `pattern` (a regex; its first group, or the whole match, is the number; default: the
  first number in the answer), which must lie in `range` (`[lo, hi]`, default `[0, 10]`);
  `normalize: true` maps it to `(x - lo) / (hi - lo)`.

Where the judge comes from: a recipe with a `judge` section starts a judge engine in the run
and serves it on 127.0.0.1 with the rollout endpoint's code (`rlvr.agent.judge`); rlvr
fills in this verifier's `url` and `token` (a per-run secret) itself. Or give `url` (any
OpenAI-compatible server: vLLM's, a hosted API) and the name of the environment variable
holding its key in `token_env` (and list it in `reward.env_passthrough`: the verifier's
process sees no other secret).

Batched: the step's samples come in calls of up to `batch_size`, sent `concurrency` at a time
(threads). Each sample has its own `request_timeout_s`; the reward pool's `timeout_s` for this
verifier bounds a whole call, so give it at least `request_timeout_s * ceil(batch_size /
concurrency)` plus a margin. Failures are explicit and fail only their sample: `timeout` (no answer in time),
`http` (a connection error or an error status), `unparsed` (no verdict in the answer, or a
number outside `range`). The judge's answer is never a silent 0.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from rlvr.types import RewardInput, Score

DEFAULT_TEMPLATE = ("Rate the response to the question from 0 (wrong) to 10 (correct).\n\nQuestion:\n{prompt}\n\n"
                    "Reference answer: {answer}\n\nResponse:\n{completion}\n\nScore (0-10):")
NUMBER = r"-?\d+(?:\.\d+)?"


def fill(template: str, sample: RewardInput) -> str:
    """The judge's prompt for `sample`.

    >>> fill("Q: {prompt} A: {completion} ({answer}) {other}", RewardInput("2+2", "4", "4"))
    'Q: 2+2 A: 4 (4) {other}'
    """
    return (template.replace("{prompt}", sample.prompt).replace("{completion}", sample.completion)
            .replace("{answer}", sample.answer))


class Verdict:
    """The verdict parser: an answer -> a Score (value, part `verdict`) or an `unparsed` failure.

    >>> Verdict(None, None, (0, 10), False)("I give it 7/10.")
    Score(value=7.0, parts={'verdict': 7.0}, failure=None)
    >>> Verdict(None, None, (0, 10), True)("Score: 12").failure
    'unparsed: score 12.0 outside [0, 10] in the judge\\'s answer "Score: 12"'
    >>> Verdict({"YES": 1.0, "NO": 0.0}, None, (0, 10), False)("no... NO, not YES").value
    0.0
    """

    def __init__(self, choices: dict | None, pattern: str | None, bounds: tuple, normalize: bool):
        self.choices, self.lo, self.hi, self.normalize = choices, float(bounds[0]), float(bounds[1]), normalize
        if choices:
            self.regex = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(choices, key=len, reverse=True))
                                    + r")\b")
        else:
            self.regex = re.compile(pattern or NUMBER)

    def __call__(self, text: str) -> Score:
        shown = json.dumps(text[:120])
        match = self.regex.search(text)
        if match is None:
            return Score(0.0, failure=f"unparsed: no {'choice' if self.choices else 'score'} in the judge's answer {shown}")
        found = match.group(1) if match.groups() else match.group(0)
        if self.choices:
            value = float(self.choices[found])
            return Score(value, {"verdict": value})
        try:
            x = float(found)
        except ValueError:
            return Score(0.0, failure=f"unparsed: {found[:40]!r} is not a number in the judge's answer {shown}")
        if not (math.isfinite(x) and self.lo <= x <= self.hi):
            return Score(0.0, failure=f"unparsed: score {x} outside [{self.lo:g}, {self.hi:g}] in the judge's answer {shown}")
        value = (x - self.lo) / (self.hi - self.lo) if self.normalize else x
        return Score(value, {"verdict": x})


class JudgeVerifier:
    """Ask an LLM judge (see the module doc) to score each sample.

    Options: url (the judge's base URL; filled in by rlvr when the run starts the judge),
    token / token_env (a bearer token, or the name of the variable holding it), template,
    choices, pattern, range, normalize, chat (true: /v1/chat/completions with the template as
    the user's message; false: /v1/completions with the template as the raw prompt), model
    (default "judge"), max_tokens (64), request_timeout_s (per sample, 30), concurrency (16),
    batch_size (64). Parts: `verdict` (the parsed number or choice score).

    >>> judge = JudgeVerifier(url="http://127.0.0.1:9", request_timeout_s=1)  # nothing listens there
    >>> [s.failure.split(":")[0] for s in judge([RewardInput("2+2=", "4", "4")])]
    ['http']
    """

    batched = True

    def __init__(self, *, url: str | None = None, token: str | None = None, token_env: str | None = None,
                 template: str = DEFAULT_TEMPLATE, choices: dict | None = None, pattern: str | None = None,
                 range: list | tuple = (0, 10), normalize: bool = False, chat: bool = True, model: str = "judge",
                 max_tokens: int = 64, request_timeout_s: float = 30.0, concurrency: int = 16, batch_size: int = 64):
        if url is not None and (not isinstance(url, str) or urlparse(url).scheme not in ("http", "https")):
            raise ValueError(f"judge verifier: option url must be an http(s) URL, got {url!r}")
        if not isinstance(template, str) or not template:
            raise TypeError(f"judge verifier: option template must be a non-empty string, got {template!r}")
        if choices is not None and not (isinstance(choices, dict) and choices and all(
                isinstance(k, str) and k and not isinstance(v, bool) and isinstance(v, (int, float))
                for k, v in choices.items())):
            raise TypeError(f"judge verifier: option choices must map words to numbers, got {choices!r}")
        if pattern is not None:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as e:
                raise ValueError(f"judge verifier: option pattern is not a regex: {e}") from None
        if not (isinstance(range, (list, tuple)) and len(range) == 2 and all(
                not isinstance(x, bool) and isinstance(x, (int, float)) for x in range) and range[0] < range[1]):
            raise ValueError(f"judge verifier: option range must be [lo, hi] with lo < hi, got {range!r}")
        for name, value in (("max_tokens", max_tokens), ("concurrency", concurrency), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TypeError(f"judge verifier: option {name} must be a whole number >= 1, got {value!r}")
        timeout_s = request_timeout_s
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
            raise TypeError(f"judge verifier: option request_timeout_s must be a number of seconds > 0, got {timeout_s!r}")
        if token_env is not None and not isinstance(token_env, str):
            raise TypeError(f"judge verifier: option token_env must be a variable name, got {token_env!r}")
        self.url, self.template, self.chat, self.model = url, template, bool(chat), str(model)
        self.token = token if token is not None else (os.environ.get(token_env) if token_env else None)
        self.verdict = Verdict(choices, pattern, tuple(range), bool(normalize))
        self.max_tokens, self.timeout_s, self.concurrency = max_tokens, float(timeout_s), concurrency
        self.max_batch_size = batch_size

    def __call__(self, samples: list[RewardInput]) -> list[Score]:
        if not self.url:
            return [Score(0.0, failure="http: no judge url (add a `judge` section to the recipe, or give the "
                                       "verifier's url)")] * len(samples)
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(samples)))) as pool:
            return list(pool.map(self.one, samples))

    def one(self, sample: RewardInput) -> Score:
        """Ask the judge about one sample; every problem is a failure of this sample alone."""
        prompt = fill(self.template, sample)
        body = {"model": self.model, "max_tokens": self.max_tokens, "temperature": 0.0}
        body.update({"messages": [{"role": "user", "content": prompt}]} if self.chat else {"prompt": prompt})
        path = "/v1/chat/completions" if self.chat else "/v1/completions"
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.token}"} if self.token else {})}
        request = urllib.request.Request(self.url.rstrip("/") + path, data=json.dumps(body).encode(), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as e:
            return Score(0.0, failure=f"http: the judge answered HTTP {e.code} {e.reason}")
        except (TimeoutError, socket.timeout):
            return Score(0.0, failure=f"timeout: the judge gave no answer within {self.timeout_s:g} s")
        except urllib.error.URLError as e:
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                return Score(0.0, failure=f"timeout: the judge gave no answer within {self.timeout_s:g} s")
            return Score(0.0, failure=f"http: {self.url} unreachable: {e.reason}")
        except (OSError, ValueError) as e:
            return Score(0.0, failure=f"http: bad reply from the judge: {type(e).__name__}: {e}")
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] if self.chat else choice["text"]
        except (KeyError, IndexError, TypeError):
            return Score(0.0, failure=f"http: the judge's reply has no choices[0] text: {json.dumps(reply)[:120]}")
        return self.verdict(text or "")
