"""Rollout engines: turn tokenized prompts into sampled completions with logprobs.

Two engines share one plain-class interface (no Ray in them; `rlvr.rollout.group.RolloutGroup`
runs each one in its own Ray actor and is what the loop talks to):

    engine = Engine(model_path, cfg: RolloutConfig, seed, dtype="float32")
    engine.generate(prompts: list[list[int]], spec: SamplingSpec) -> list[Completion]
        # spec.n samples per prompt, grouped by prompt in order; per-token sampling logprobs
    engine.generate_requests(requests: list[(prompt_ids, SamplingSpec)]) -> list[list[Completion]]
        # independent requests, each with its own sampling (the agent endpoint's batches)
    engine.ping() -> bool
    # weight sync (rlvr.sync.engine.WeightSyncMixin; engines implement _load_weights):
    engine.update_weights(state: dict[str, Tensor], version: int) -> float  # seconds
    engine.join_sync_group(...); engine.receive_weights(manifest, version) -> dict
    engine.weight_version() -> int; engine.sleep(); engine.wake_up()

* `vllm` (`rlvr.rollout.vllm_engine.VLLMEngine`): vLLM offline engine, in-process.
* `hf`   (`rlvr.rollout.hf_engine.HFEngine`): transformers `generate`.

`ENGINES` maps `rollout.engine` names to "module:Class" strings, so importing
this package stays cheap (no vllm, ray or transformers import here).
"""

from __future__ import annotations

import importlib

ENGINES: dict[str, str] = {
    "vllm": "rlvr.rollout.vllm_engine:VLLMEngine",
    "hf": "rlvr.rollout.hf_engine:HFEngine",
}


def engine_class(name: str) -> type:
    """The engine class registered under `name` (imports its module)."""
    if name not in ENGINES:
        raise KeyError(f"unknown rollout engine {name!r}; known: {sorted(ENGINES)}")
    module, _, attr = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), attr)
