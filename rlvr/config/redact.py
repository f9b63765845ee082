"""Secrets never leave a recipe: the values of secret-looking keys are replaced before a recipe
is written to a run folder (`recipe.yaml`), printed by `rlvr validate`, or served by the status
API. `${oc.env:...}` interpolations are resolved when a recipe loads, so without this a token
given as `headers: {Authorization: "Bearer ${oc.env:TOKEN}"}` would be published.

Secret-looking: a key one of whose `_`/`-`-separated words is token, secret, password, passwd,
apikey, authorization, credential(s), cookie or private, or that is `api_key` / `access_key` /
`secret_key`; every value under a `headers` mapping; a URL's `user:password@`. Keys naming
where a secret comes from (ending in `_env`, `_file`, `_path`) are not secrets, nor are
counts such as `max_tokens` (the word is `tokens`).
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"
_WORDS = {"token", "secret", "password", "passwd", "apikey", "authorization", "credential", "credentials", "cookie",
          "private"}
_KEYS = {"api_key", "access_key", "secret_key"}
_SOURCES = ("_env", "_file", "_path")
_URL_PASSWORD = re.compile(r"(?<=://)([^/@:\s]+):([^/@\s]+)@")


def is_secret_key(key: object) -> bool:
    """
    >>> [is_secret_key(k) for k in ("Authorization", "api_key", "hf_token", "max_tokens", "token_env", "prompt_key")]
    [True, True, True, False, False, False]
    """
    if not isinstance(key, str):
        return False
    k = key.lower()
    if k.endswith(_SOURCES):
        return False
    return k in _KEYS or bool(_WORDS & set(re.split(r"[_\-\s.]+", k)))


def redact(obj, hide: bool = False):
    """A copy of a recipe (dicts, lists, scalars) with the secrets replaced by `REDACTED` (`hide`:
    every non-empty scalar in `obj` is one: it is under a secret key or `headers`).

    >>> redact({"url": "https://u:pw@h/x", "headers": {"X-Id": "abc"}, "hf_token": "t", "n": 3})
    {'url': 'https://u:<redacted>@h/x', 'headers': {'X-Id': '<redacted>'}, 'hf_token': '<redacted>', 'n': 3}
    >>> redact({"credentials": {"user": "me", "pass": ["p"]}})
    {'credentials': {'user': '<redacted>', 'pass': ['<redacted>']}}
    """
    if isinstance(obj, dict):
        return {key: redact(value, hide or is_secret_key(key) or (isinstance(key, str) and key.lower() == "headers"))
                for key, value in obj.items()}
    if isinstance(obj, list):
        return [redact(v, hide) for v in obj]
    if hide and obj not in (None, ""):
        return REDACTED
    if isinstance(obj, str):
        return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", obj)
    return obj
