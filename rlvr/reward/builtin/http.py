"""Built-in `http` verifier: ask a remote scoring service.

Each sample is POSTed as JSON `{"prompt", "completion", "answer", "metadata"}` to
the `url` option; the service answers `{"score": <number>, "parts": {name: number}}`
(`parts` optional) with HTTP 200. Use it for checks that cannot run in the reward
worker (a sandboxed code runner, a judge model behind an API).

Failures are explicit, never a silent 0: connection errors, timeouts and HTTP 5xx
are retried `retries` times (short linear back-off), then returned as
`Score(0, failure=...)`; a 4xx status or a malformed reply fails at once (retrying
would not help). Only the standard library (urllib) is used.

The reward pool's per-verifier `timeout_s` must exceed the worst case here,
`(retries + 1) * timeout_s` plus back-off, or the pool kills the worker first.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from rlvr.types import RewardInput, Score

BACKOFF_S = 0.2  # sleep BACKOFF_S * attempt between tries


class _Permanent(Exception):
    """A failure that retrying will not fix (4xx, bad reply)."""


class HttpVerifier:
    """POST each sample to `url` and use the `score` it sends back.

    Options: url (required, http or https), timeout_s (per request, default 10),
    retries (extra tries after a network error or 5xx, default 2), headers (dict
    of extra request headers, e.g. an Authorization token).

    >>> from rlvr.types import RewardInput
    >>> check = HttpVerifier(url="http://127.0.0.1:9/score", timeout_s=1, retries=0)  # nothing listens there
    >>> score = check(RewardInput(prompt="2+2=?", completion="4", answer="4"))
    >>> score.value, score.failure.startswith("http verifier: POST http://127.0.0.1:9/score failed after 1 try")
    (0.0, True)
    """

    def __init__(self, *, url: str, timeout_s: float = 10, retries: int = 2, headers: dict | None = None):
        if not isinstance(url, str) or urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc:
            raise ValueError(f"http verifier: option url must be an http(s) URL, got {url!r}")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
            raise TypeError(f"http verifier: option timeout_s must be a number of seconds > 0, got {timeout_s!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise TypeError(f"http verifier: option retries must be a whole number >= 0, got {retries!r}")
        headers = dict(headers or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise TypeError(f"http verifier: option headers must map strings to strings, got {headers!r}")
        self.url, self.timeout_s, self.retries = url, float(timeout_s), retries
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", **headers}

    def __call__(self, sample: RewardInput) -> Score:
        body = json.dumps({"prompt": sample.prompt, "completion": sample.completion, "answer": sample.answer,
                           "metadata": sample.metadata}, default=str).encode("utf-8", "surrogatepass")
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(BACKOFF_S * attempt)
            try:
                return _parse_reply(self._post(body))
            except _Permanent as e:
                return Score(0.0, failure=f"http verifier: {self.url}: {e}")
            except (urllib.error.URLError, OSError, TimeoutError) as e:  # HTTPError 5xx lands here too
                error = f"{type(e).__name__}: {getattr(e, 'reason', None) or e}"
        tries = self.retries + 1
        return Score(0.0, failure=f"http verifier: POST {self.url} failed after {tries} "
                                  f"{'try' if tries == 1 else 'tries'}: {error}")

    def _post(self, body: bytes) -> bytes:
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500:
                raise _Permanent(f"HTTP {e.code} {e.reason}") from None
            raise


def _parse_reply(raw: bytes) -> Score:
    """`{"score": x, "parts": {...}}` -> Score; anything else raises _Permanent."""
    try:
        reply = json.loads(raw)
    except ValueError:
        raise _Permanent(f"reply is not JSON: {raw[:80]!r}") from None
    value = reply.get("score") if isinstance(reply, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Permanent(f"reply has no finite number 'score': {raw[:80]!r}")
    parts = reply.get("parts") or {}
    if not isinstance(parts, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in parts.values()):
        raise _Permanent(f"reply 'parts' must map names to numbers: {raw[:80]!r}")
    return Score(float(value), {str(k): float(v) for k, v in parts.items()})
