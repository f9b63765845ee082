"""A checkpoint as a standalone model folder (`rlvr export CHECKPOINT OUT [--merge] [--base PATH]`).

A LoRA checkpoint (`adapter_config.json` + `adapter_model.safetensors`, see
`rlvr.trainer.lora`) is copied as a PEFT adapter folder (tokenizer files included), or
with `--merge` loaded onto its base model (`base_model_name_or_path`, or `--base`),
merged with peft's `merge_and_unload()` and written as a plain Hugging Face model folder
that `AutoModelForCausalLM.from_pretrained` and vLLM load. A full fine-tuning checkpoint
is already such a folder: it is copied (without the trainer's resume state).

OUT is written atomically (`rlvr.run.files.atomic_folder_write`) and must not exist yet.
Every problem is an `ExportError` (one line for the CLI).
"""

from __future__ import annotations

import os
import shutil

RESUME_ONLY = ("trainer", "rlvr_state.json", "manifest.json")  # what only resuming needs


class ExportError(ValueError):
    """A checkpoint that cannot be exported as asked (one line for the CLI)."""


def export(checkpoint: str, out: str, merge: bool = False, base: str | None = None) -> str:
    """Write `checkpoint` to `out` (see the module docstring); returns `out`'s absolute path."""
    from rlvr.run.files import atomic_folder_write
    from rlvr.trainer.lora import base_model_of, is_adapter_folder

    if not os.path.isdir(checkpoint):
        raise ExportError(f"{checkpoint}: no such checkpoint folder")
    if os.path.exists(out):
        raise ExportError(f"{out} already exists (choose a new folder)")
    adapter = is_adapter_folder(checkpoint)
    if not adapter and not os.path.isfile(os.path.join(checkpoint, "config.json")):
        raise ExportError(f"{checkpoint} is not a checkpoint (no adapter_config.json + adapter_model.safetensors, "
                          "no config.json)")
    if merge and not adapter:
        raise ExportError(f"{checkpoint} is a full fine-tuning checkpoint (no LoRA adapter): nothing to merge; "
                          "drop --merge to copy it")
    if not merge:
        return atomic_folder_write(out, lambda tmp: _copy_model_files(checkpoint, tmp))
    base = base or base_model_of(checkpoint)
    if not (os.path.isdir(base) and os.path.isfile(os.path.join(base, "config.json"))):
        raise ExportError(f"the adapter's base model {base} is not a model folder here (give it with --base)")
    return atomic_folder_write(out, lambda tmp: _write_merged(checkpoint, base, tmp))


def _copy_model_files(checkpoint: str, tmp: str) -> None:
    for name in sorted(os.listdir(checkpoint)):
        if name not in RESUME_ONLY and os.path.isfile(os.path.join(checkpoint, name)):
            shutil.copy2(os.path.join(checkpoint, name), os.path.join(tmp, name))


def _write_merged(checkpoint: str, base: str, tmp: str) -> None:
    """The base model with the adapter merged in (peft `merge_and_unload`), as an HF folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rlvr.run.checkpoint import COPIED_FILES

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, checkpoint).merge_and_unload()
    merged.save_pretrained(tmp, safe_serialization=True)
    for name in COPIED_FILES:
        source = os.path.join(checkpoint, name) if os.path.isfile(os.path.join(checkpoint, name)) else os.path.join(base, name)
        if not os.path.isfile(os.path.join(tmp, name)) and os.path.isfile(source):
            shutil.copy2(source, os.path.join(tmp, name))
