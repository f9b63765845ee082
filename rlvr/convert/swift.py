"""ms-swift's `swift rlhf --rlhf_type grpo ...` command line as rlvr recipe settings.

Flags are `--name value [value ...]` or `--name=value`; a flag without a value is true. A leading
`swift rlhf`, and `NPROC_PER_NODE=8 CUDA_VISIBLE_DEVICES=...` environment assignments, are read too
(NPROC_PER_NODE: the GPUs, unless `rlvr convert --gpus` says).
"""

from __future__ import annotations

import re

from rlvr.convert.build import convert_settings
from rlvr.convert.grpo import Conversion, ConvertError

# swift flag -> TRL setting name (the rest have the same names in both)
RENAMES = {"model": "model_name_or_path", "dataset": "dataset_name", "lora_rank": "lora_r",
           "target_modules": "lora_target_modules"}
MULTI = ("dataset", "reward_funcs", "target_modules", "lora_target_modules", "reward_weights")
ENV = re.compile(r"([A-Z_][A-Z0-9_]*)=(.*)")


def parse_swift_args(argv: list[str]) -> tuple[dict, dict]:
    """(flags, environment assignments) of a `swift rlhf` command line.

    >>> parse_swift_args(["NPROC_PER_NODE=8", "swift", "rlhf", "--rlhf_type", "grpo", "--reward_funcs", "accuracy",
    ...                   "format", "--use_vllm", "--beta=0.04"])
    ({'rlhf_type': 'grpo', 'reward_funcs': ['accuracy', 'format'], 'use_vllm': 'true', 'beta': '0.04'}, {'NPROC_PER_NODE': '8'})
    """
    flags: dict = {}
    env: dict = {}
    current = None
    for token in argv:
        if current is None and ENV.fullmatch(token):
            name, value = ENV.fullmatch(token).groups()
            env[name] = value
        elif token.startswith("--"):
            name, eq, value = token[2:].partition("=")
            current = name.replace("-", "_")
            flags[current] = [value] if eq else []
        elif current is None:
            if token not in ("swift", "rlhf"):
                raise ConvertError(f"unexpected {token!r} before the first --flag")
        else:
            flags[current].append(token)
    out = {}
    for name, values in flags.items():
        if name in MULTI:
            out[name] = values
        elif len(values) > 1:
            raise ConvertError(f"--{name} takes one value, got {' '.join(values)}")
        else:
            out[name] = values[0] if values else "true"
    return out, env


def convert_swift(argv: list[str], gpus: int | None = None) -> Conversion:
    """A `swift rlhf --rlhf_type grpo` command line as a Conversion (see `rlvr.convert.build.to_yaml`)."""
    flags, env = parse_swift_args(argv)
    kind = flags.pop("rlhf_type", None)
    if kind != "grpo":
        raise ConvertError(f"only --rlhf_type grpo converts to rlvr (got {kind or 'none'}): rlvr trains with "
                           "verifiable rewards (GRPO, Dr. GRPO, DAPO, GSPO, RLOO, REINFORCE++)")
    if gpus is None:
        gpus = int(env["NPROC_PER_NODE"]) if env.get("NPROC_PER_NODE", "").isdigit() else 1
    conv = Conversion("ms-swift", "--")
    settings = {RENAMES.get(k, k): v for k, v in flags.items()}
    return convert_settings(conv, settings, gpus)
