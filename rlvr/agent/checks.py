"""Reading the JSON values of an OpenAI API request: type and range checks whose only failure is
an `ApiError` (HTTP 400, OpenAI's error object, `param` naming the field).

A value is null (None) when the key is absent or null; each check then gives its default. The
messages name the expected type and the JSON type given ("n must be an integer, got a
string"); values are echoed only when they are scalars, cut to 80 characters, and integers too
large to print are described by their size, so no body, however odd, makes a long or failing
message.
"""

from __future__ import annotations

import json
import math


class ApiError(Exception):
    """An OpenAI-style error: HTTP status and the error object."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None):
        message = " ".join(str(message).splitlines())[:300]
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type, code

    def body(self) -> dict:
        """The response body: `{"error": {"message", "type", "param", "code"}}`."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def kind(value: object) -> str:
    """The JSON type of a value, with its article (never the value itself).

    >>> kind(None), kind(True), kind(3), kind(0.5), kind("x"), kind([]), kind({})
    ('null', 'a boolean', 'an integer', 'a number', 'a string', 'an array', 'an object')
    """
    if value is None:
        return "null"
    for types, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                        ((list, tuple), "an array"), (dict, "an object")):
        if isinstance(value, types):
            return name
    return f"a {type(value).__name__}"


def show(value: object) -> str:
    """A scalar as JSON, cut to 80 characters; containers and huge integers by their type only.

    >>> show("x" * 500)[-4:], show(float("nan")), show(10**5000), show([1])
    ('x...', 'NaN', 'an integer of 16610 bits', 'an array')
    """
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        return f"an integer of {value.bit_length()} bits"  # str() of a huge int raises
    if isinstance(value, str):
        value = value[:80]
    elif not (value is None or isinstance(value, (bool, int, float))):
        return kind(value)
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def type_error(param: str, expected: str, value: object) -> ApiError:
    return ApiError(400, f"{param} must be {expected}, got {kind(value)}", param)


def unsupported(param: str, why: str) -> ApiError:
    return ApiError(400, f"{param} is not supported: {why}", param)


def is_int(value: object) -> bool:
    """JSON integers: Python ints that are not booleans."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_bool(value: object, param: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise type_error(param, "a boolean", value)
    return value


def check_int(value: object, param: str, default: int | None, lo: int, hi: int) -> int | None:
    """An integer in [lo, hi] (booleans are not integers)."""
    if value is None:
        return default
    if not is_int(value):
        raise type_error(param, "an integer", value)
    if not lo <= value <= hi:
        raise ApiError(400, f"{param} must be an integer from {lo} to {hi}, got {show(value)}", param)
    return value


def check_number(value: object, param: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    """A finite number in [lo, hi], or (lo, hi] with `lo_open`. Integers are compared exactly,
    before float() (which overflows on huge ones).

    >>> check_number(1, "top_p", 1.0, 0, 1, lo_open=True)
    1.0
    >>> check_number(10**400, "temperature", 1.0, 0, 2)
    Traceback (most recent call last):
    rlvr.agent.checks.ApiError: temperature must be in [0, 2], got an integer of 1329 bits
    """
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise type_error(param, "a number", value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f"{param} must be a finite number, got {show(value)}", param)
    if value > hi or (value <= lo if lo_open else value < lo):
        raise ApiError(400, f"{param} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {show(value)}", param)
    return float(value)


def check_str(value: object, param: str, default: str | None = None, required: bool = False) -> str | None:
    """A string; with `required`, a non-empty one that must be given."""
    if value is None and required:
        raise ApiError(400, f"{param} is required", param)
    if value is None:
        return default
    if not isinstance(value, str):
        raise type_error(param, "a string", value)
    if required and not value:
        raise ApiError(400, f"{param} must not be empty", param)
    return value


def check_utf8(text: str, param: str) -> str:
    """Text with a UTF-8 form (so a tokenizer or a JSON response can take it): JSON's `\\ud800`
    escapes decode to unpaired surrogates, which have none (tool output read with
    `surrogateescape` writes them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(400, f"{param} is not valid Unicode: an unpaired surrogate at character {e.start}",
                       param) from None
    return text
