"""A TRL GRPO config YAML (the file `trl grpo --config` or `accelerate launch ... --config` reads:
`GRPOConfig` fields plus the script's `model_name_or_path`, `dataset_name`, `reward_funcs`,
`use_peft`/`lora_*`) as rlvr recipe settings."""

from __future__ import annotations

import os

from rlvr.convert.build import convert_settings
from rlvr.convert.grpo import Conversion, ConvertError


def read_trl_config(path: str) -> dict:
    import yaml

    if not os.path.isfile(path):
        raise ConvertError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConvertError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConvertError(f"{path}: expected a mapping of GRPOConfig fields")
    return data


def convert_trl(path: str, gpus: int | None = None) -> Conversion:
    """A TRL GRPO config file as a Conversion (see `rlvr.convert.build.to_yaml`)."""
    settings = read_trl_config(path)
    if "num_processes" in settings and gpus is None:  # an accelerate setting put in the same file
        gpus = int(settings.pop("num_processes"))
    return convert_settings(Conversion("TRL"), settings, gpus or 1)
