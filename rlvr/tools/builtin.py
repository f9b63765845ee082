"""Built-in tools, registered like any plugin (entry-point group `rlvr.tools`):

* `calc`: arithmetic on numbers with + - * / // % ** and parentheses, evaluated by walking
  Python's syntax tree (never `eval`): anything else (names, calls, attributes) is refused;
  powers are capped (`max_exponent`) and so is the result's size (`max_digits`).
* `python`: runs the code in the `code` verifier's sandbox (`rlvr.reward.sandbox.run_python`:
  bubblewrap when installed (unprivileged user, own pid/net namespaces, no host files but
  the interpreter, read-only; a private size-limited /tmp), CPU / memory / file / process
  limits, wall-clock kill); the
  observation is what it printed (stdout, then stderr) and its exit status when not 0.

Both run in the tool worker's child process (`rlvr.tools.worker`) under the call's hard
timeout, like every tool.
"""

from __future__ import annotations

import ast
import operator

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class Calc:
    """Evaluate an arithmetic expression.

    >>> Calc()(expression="4821*37"), Calc()(expression="(1 + 2) ** 3 / 4")
    ('178377', '6.75')
    >>> Calc()(expression="__import__('os')")
    Traceback (most recent call last):
    ...
    ValueError: only numbers and + - * / // % ** ( ) are allowed
    """

    schema = {"name": "calc", "description": "Evaluate an arithmetic expression and return its value.",
              "parameters": {"type": "object",
                             "properties": {"expression": {"type": "string", "description": "e.g. 4821*37"}},
                             "required": ["expression"]}}

    def __init__(self, max_length: int = 200, max_exponent: int = 64, max_digits: int = 100):
        self.max_length, self.max_exponent, self.max_digits = max_length, max_exponent, max_digits

    def __call__(self, expression: str) -> str:
        if not isinstance(expression, str) or len(expression) > self.max_length:
            raise ValueError(f"expression must be a string of at most {self.max_length} characters")
        try:
            tree = ast.parse(expression.strip(), mode="eval")
        except SyntaxError:
            raise ValueError(f"not an arithmetic expression: {expression!r}") from None
        value = self._eval(tree.body)
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            value = int(value)
        return str(value)

    def _eval(self, node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](self._eval(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > self.max_exponent:
                raise ValueError(f"exponent {right} is larger than {self.max_exponent}")
            try:
                value = _BINARY[type(node.op)](left, right)
            except ZeroDivisionError:
                raise ValueError("division by zero") from None
            if isinstance(value, int) and value.bit_length() > self.max_digits * 4:
                raise ValueError(f"the result has more than about {self.max_digits} digits")
            return value
        raise ValueError("only numbers and + - * / // % ** ( ) are allowed")


class Python:
    """Run Python code in a sandbox; the observation is its output."""

    schema = {"name": "python", "description": "Run Python 3 code and return what it prints.",
              "parameters": {"type": "object",
                             "properties": {"code": {"type": "string", "description": "the program to run"}},
                             "required": ["code"]}}

    def __init__(self, timeout_s: float = 5.0, cpu_s: float | None = None, memory_mb: int = 512,
                 max_file_mb: int = 16, max_procs: int = 32, max_output_bytes: int = 1 << 16):
        self.limits = {"timeout_s": timeout_s, "cpu_s": cpu_s or timeout_s, "memory_mb": memory_mb,
                       "max_file_mb": max_file_mb, "max_procs": max_procs, "max_output_bytes": max_output_bytes}

    def __call__(self, code: str) -> str:
        from rlvr.reward.sandbox import run_python

        if not isinstance(code, str):
            raise ValueError("code must be a string")
        result = run_python(code, "", **self.limits)
        out = result.stdout + (("\n" if result.stdout else "") + result.stderr if result.stderr else "")
        if result.killed_reason:
            out += f"\n[stopped: {result.killed_reason}]"
        elif result.returncode:
            out += f"\n[exit status {result.returncode}]"
        return out.strip() or "(no output)"
